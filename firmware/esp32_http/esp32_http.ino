// pushgate ESP32 HTTP example.
//
// A press of the button sends POST /api/push/<topic> with the Title and Priority header shortcuts, the
// message as a text body and the topic key as "Authorization: Bearer <key>". pushgate answers 200 with
// {"success":true,"id":...} once the message is stored; anything else is printed with its JSON error,
// which says what to fix. Network errors and 5xx answers are retried with backoff. Settings in config.h.
#include <HTTPClient.h>
#include <WiFi.h>
#include <WiFiClientSecure.h>

#include "config.h"

// The exact URL form: scheme, host, port, /api/push/<topic>. pushgate answers it (with or without a
// trailing slash) without a redirect; HTTPClient does not follow redirects on a POST, so a URL that
// redirected (http to https, a missing path prefix) would lose the message.
const String pushUrl = String(PUSHGATE_USE_TLS ? "https://" : "http://") + PUSHGATE_HOST + ":" +
                       PUSHGATE_HTTP_PORT + "/api/push/" + PUSHGATE_TOPIC;

const int MAX_ATTEMPTS = 3;              // a network error or a 5xx is tried again, twice
const unsigned long RETRY_FIRST_MS = 1000;  // then 2 s
const uint16_t TIMEOUT_MS = 10000;       // pushgate answers once the message is on disk: well under this
const unsigned long DEBOUNCE_MS = 50;

int lastButton = HIGH;
unsigned long lastEdgeMs = 0;

// One POST; returns the HTTP status, or a negative HTTPClient error.
int postOnce(const String &title, const String &message, const char *priority) {
#if PUSHGATE_USE_TLS
  WiFiClientSecure client;
  client.setCACert(PUSHGATE_CA_CERT);
#else
  WiFiClient client;
#endif
  HTTPClient http;
  if (!http.begin(client, pushUrl)) {
    Serial.printf("bad URL: %s\n", pushUrl.c_str());
    return HTTPC_ERROR_CONNECTION_REFUSED;
  }
  http.setTimeout(TIMEOUT_MS);
  http.setFollowRedirects(HTTPC_DISABLE_FOLLOW_REDIRECTS);  // a redirect is a wrong URL: show it
  http.addHeader("Authorization", String("Bearer ") + PUSHGATE_KEY);
  http.addHeader("Title", title);
  http.addHeader("Priority", priority);
  http.addHeader("Content-Type", "text/plain; charset=utf-8");
  int status = http.POST(message);
  if (status == HTTP_CODE_OK) {
    Serial.printf("pushed: %s\n", http.getString().c_str());
  } else if (status > 0) {
    // pushgate's errors are JSON {"error", "message"}: 401 a wrong key, 404 an unknown topic, 400 names
    // the field, 429 the rate limit.
    Serial.printf("push refused: HTTP %d %s\n", status, http.getString().c_str());
  } else {
    Serial.printf("push failed: %s\n", HTTPClient::errorToString(status).c_str());
  }
  http.end();
  return status;
}

bool push(const String &title, const String &message, const char *priority) {
  unsigned long waitMs = RETRY_FIRST_MS;
  for (int attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    int status = postOnce(title, message, priority);
    if (status == HTTP_CODE_OK) return true;
    if (status > 0 && status < 500) return false;  // a 4xx will not get better by itself
    if (attempt < MAX_ATTEMPTS) {
      Serial.printf("retrying in %lu s\n", waitMs / 1000);
      delay(waitMs);
      waitMs *= 2;
    }
  }
  return false;
}

void setup() {
  Serial.begin(115200);
  pinMode(BUTTON_PIN, INPUT_PULLUP);
  Serial.printf("\npushgate esp32_http: POST %s\n", pushUrl.c_str());
  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  Serial.printf("WiFi: connecting to %s", WIFI_SSID);
  while (WiFi.status() != WL_CONNECTED) {
    delay(500);
    Serial.print(".");
  }
  Serial.print(" connected, IP ");
  Serial.println(WiFi.localIP());
}

void loop() {
  int button = digitalRead(BUTTON_PIN);
  if (button != lastButton && millis() - lastEdgeMs > DEBOUNCE_MS) {
    lastEdgeMs = millis();
    lastButton = button;
    if (button == LOW) {
      Serial.println("button pressed");
      if (WiFi.status() != WL_CONNECTED) {
        Serial.println("WiFi: not connected, push skipped");
      } else {
        push("Button pressed", String(DEVICE_NAME) + ": the button was pressed", "high");
      }
    }
  }
  delay(10);
}
