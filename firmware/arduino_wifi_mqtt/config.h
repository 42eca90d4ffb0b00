// Settings of the pushgate Arduino WiFi MQTT example: fill in the first block, leave the rest as it is
// unless your board or your gateway differs.
#pragma once

// ---- fill these in ------------------------------------------------------------------------------
#define WIFI_SSID "your-wifi"
#define WIFI_PASSWORD "your-wifi-password"

// The machine that runs pushgate, as the board reaches it on your LAN (pushgate must listen there:
// PUSHGATE_MQTT_HOST=0.0.0.0 pushgate serve).
#define PUSHGATE_HOST "192.168.1.10"
// The topic to push to, and one of its keys (pushgate key create alarm --label uno-r4).
#define PUSHGATE_TOPIC "alarm"
#define PUSHGATE_KEY "pk_0123456789ab_replace-with-the-key-pushgate-printed"
// MQTT client id and username: any name that is unique on your broker (the key is the password).
#define DEVICE_NAME "uno-r4-door"

// ---- gateway -------------------------------------------------------------------------------------
#define PUSHGATE_MQTT_PORT 1883    // pushgate's MQTT port ([mqtt] port)
#define PUSHGATE_PREFIX "pushgate"  // the root of pushgate's MQTT topics ([mqtt] prefix)

// ---- board ---------------------------------------------------------------------------------------
#define BUTTON_PIN 2            // a push button from pin 2 to GND: pressed = LOW (INPUT_PULLUP)
#define LED_PIN LED_BUILTIN     // the on-board LED (pin 13 on the UNO R4 WiFi and the Nano 33 IoT)
