// Settings of the pushgate ESP8266 MQTT example: fill in the first block, leave the rest as it is unless
// your board or your gateway differs.
#pragma once

// ---- fill these in ------------------------------------------------------------------------------
#define WIFI_SSID "your-wifi"
#define WIFI_PASSWORD "your-wifi-password"

// The machine that runs pushgate, as the board reaches it on your LAN (pushgate must listen there:
// PUSHGATE_MQTT_HOST=0.0.0.0 pushgate serve).
#define PUSHGATE_HOST "192.168.1.10"
// The topic to push to, and one of its keys (pushgate key create alarm --label esp8266).
#define PUSHGATE_TOPIC "alarm"
#define PUSHGATE_KEY "pk_0123456789ab_replace-with-the-key-pushgate-printed"
// MQTT client id and username: any name that is unique on your broker (the key is the password).
#define DEVICE_NAME "esp8266-door"

// ---- gateway -------------------------------------------------------------------------------------
#define PUSHGATE_MQTT_PORT 1883    // pushgate's MQTT port ([mqtt] port)
#define PUSHGATE_PREFIX "pushgate"  // the root of pushgate's MQTT topics ([mqtt] prefix)

// ---- board (NodeMCU, Wemos D1 mini) ----------------------------------------------------------------
#define BUTTON_PIN 0  // the FLASH button of a NodeMCU (GPIO0, D3): pressed = LOW (INPUT_PULLUP)
#define LED_PIN 2     // the blue LED of the ESP-12 module (GPIO2, D4)
#define LED_ON LOW    // ... which lights when the pin is LOW
