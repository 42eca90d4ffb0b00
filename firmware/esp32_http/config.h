// Settings of the pushgate ESP32 HTTP example: fill in the first block, leave the rest as it is unless
// your board or your gateway differs.
#pragma once

// ---- fill these in ------------------------------------------------------------------------------
#define WIFI_SSID "your-wifi"
#define WIFI_PASSWORD "your-wifi-password"

// The machine that runs pushgate, as the board reaches it on your LAN (pushgate must listen there:
// PUSHGATE_HTTP_HOST=0.0.0.0 pushgate serve).
#define PUSHGATE_HOST "192.168.1.10"
// The topic to push to, and one of its keys (pushgate key create alarm --label esp32).
#define PUSHGATE_TOPIC "alarm"
#define PUSHGATE_KEY "pk_0123456789ab_replace-with-the-key-pushgate-printed"
// Shown in the notification.
#define DEVICE_NAME "esp32-door"

// ---- gateway -------------------------------------------------------------------------------------
// pushgate's HTTP port ([http] port). With PUSHGATE_USE_TLS, the port of your HTTPS proxy (usually 443).
#define PUSHGATE_HTTP_PORT 8080

// HTTPS: pushgate serves plain HTTP; put a TLS proxy in front of it (Caddy, nginx) and set this to 1,
// PUSHGATE_HTTP_PORT to the proxy's port, PUSHGATE_HOST to the name in its certificate, and paste the PEM
// of the CA that signed that certificate below.
#define PUSHGATE_USE_TLS 0
static const char PUSHGATE_CA_CERT[] = R"PEM(
-----BEGIN CERTIFICATE-----
paste the CA certificate (PEM) of your TLS proxy here
-----END CERTIFICATE-----
)PEM";

// ---- board ---------------------------------------------------------------------------------------
#define BUTTON_PIN 0  // the BOOT button of most ESP32 dev boards: pressed = LOW (INPUT_PULLUP)
