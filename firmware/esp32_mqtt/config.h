// Settings of the pushgate ESP32 MQTT example: fill in the first block, leave the rest as it is unless
// your board or your gateway differs.
#pragma once

// ---- fill these in ------------------------------------------------------------------------------
#define WIFI_SSID "your-wifi"
#define WIFI_PASSWORD "your-wifi-password"

// The machine that runs pushgate, as the board reaches it on your LAN (pushgate must listen there:
// PUSHGATE_MQTT_HOST=0.0.0.0 pushgate serve).
#define PUSHGATE_HOST "192.168.1.10"
// The topic to push to, and one of its keys (pushgate key create alarm --label esp32).
#define PUSHGATE_TOPIC "alarm"
#define PUSHGATE_KEY "pk_0123456789ab_replace-with-the-key-pushgate-printed"
// MQTT client id and username: any name that is unique on your broker (the key is the password).
#define DEVICE_NAME "esp32-door"

// ---- gateway -------------------------------------------------------------------------------------
// pushgate's MQTT port ([mqtt] port). With PUSHGATE_USE_TLS, the port of your TLS proxy (usually 8883).
#define PUSHGATE_MQTT_PORT 1883
// The root of pushgate's MQTT topics ([mqtt] prefix).
#define PUSHGATE_PREFIX "pushgate"

// TLS: pushgate listens in plain TCP; put a TLS proxy in front of it (stunnel, nginx stream, HAProxy) and
// set this to 1, PUSHGATE_MQTT_PORT to the proxy's port, PUSHGATE_HOST to the name in its certificate,
// and paste the PEM of the CA that signed that certificate below.
#define PUSHGATE_USE_TLS 0
static const char PUSHGATE_CA_CERT[] = R"PEM(
-----BEGIN CERTIFICATE-----
paste the CA certificate (PEM) of your TLS proxy here
-----END CERTIFICATE-----
)PEM";

// ---- board ---------------------------------------------------------------------------------------
#define BUTTON_PIN 0        // the BOOT button of most ESP32 dev boards: pressed = LOW (INPUT_PULLUP)
#define LED_PIN 2           // the on-board LED of most ESP32 dev boards (DevKitC V4 has none: add one)
#define SENSOR_PIN 34       // an analog sensor on an ADC1 pin; -1 disables the sensor
#define SENSOR_THRESHOLD 3000  // a reading above this (0-4095) pushes an alert, once per crossing
