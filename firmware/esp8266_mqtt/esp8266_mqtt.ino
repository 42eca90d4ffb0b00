// pushgate ESP8266 MQTT example (NodeMCU, Wemos D1 mini, any ESP-12 board).
//
// A press of the button publishes a notification with Approve and Reject buttons on
// pushgate/<topic>/push; an Approve tapped on the hub or the phone comes back on pushgate/<topic>/action
// and lights the LED (Reject turns it off). The topic key is the MQTT password. Lost connections are
// retried with exponential backoff. Settings are in config.h.
#include <ESP8266WiFi.h>
#include <PubSubClient.h>

#include "config.h"

// pushgate's MQTT contract: the device publishes on <prefix>/<topic>/push and reads the gateway's
// <prefix>/<topic>/action (actions taken) and <prefix>/<topic>/error (a refused push, with the reason).
const String pushTopic = String(PUSHGATE_PREFIX) + "/" + PUSHGATE_TOPIC + "/push";
const String actionTopic = String(PUSHGATE_PREFIX) + "/" + PUSHGATE_TOPIC + "/action";
const String errorTopic = String(PUSHGATE_PREFIX) + "/" + PUSHGATE_TOPIC + "/error";

const char *const APPROVE_ACTION = "approve";
const char *const REJECT_ACTION = "reject";

const unsigned long BACKOFF_MIN_MS = 1000;   // first retry after a second
const unsigned long BACKOFF_MAX_MS = 60000;  // then 2, 4, 8 ... never more than a minute apart
const unsigned long DEBOUNCE_MS = 50;
const uint16_t MQTT_BUFFER_BYTES = 1024;     // PubSubClient drops larger packets; action events are ~300

WiFiClient net;
PubSubClient mqtt(net);

unsigned long backoffMs = BACKOFF_MIN_MS;
unsigned long lastAttemptMs = 0;
bool attempted = false;
int lastButton = HIGH;
unsigned long lastEdgeMs = 0;

// The value of a string field of a flat JSON object, or "" when it is missing or not a string.
// pushgate's events are flat, compact JSON with ids and action ids that need no escaping.
String jsonString(const String &json, const char *field) {
  String key = String("\"") + field + "\"";
  int at = json.indexOf(key);
  if (at < 0) return String();
  at = json.indexOf(':', at + key.length());
  if (at < 0) return String();
  at++;
  while (at < (int)json.length() && json[at] == ' ') at++;
  if (at >= (int)json.length() || json[at] != '"') return String();
  int end = json.indexOf('"', at + 1);
  if (end < 0) return String();
  return json.substring(at + 1, end);
}

void setLed(bool on) { digitalWrite(LED_PIN, on ? LED_ON : !LED_ON); }

void onMessage(char *topic, uint8_t *payload, unsigned int length) {
  String body;
  body.reserve(length);
  for (unsigned int i = 0; i < length; i++) body += (char)payload[i];
  if (errorTopic == topic) {
    Serial.printf("pushgate refused a push: %s\n", body.c_str());
    return;
  }
  String actionId = jsonString(body, "action_id");
  Serial.printf("action %s on message %s\n", actionId.c_str(), jsonString(body, "message_id").c_str());
  if (actionId == APPROVE_ACTION) {
    setLed(true);
    Serial.println("LED on");
  } else if (actionId == REJECT_ACTION) {
    setLed(false);
    Serial.println("LED off");
  }
}

void publishPress() {
  String payload = String("{\"title\":\"Button pressed\",\"message\":\"") + DEVICE_NAME +
                   ": approve?\",\"priority\":\"high\",\"actions\":[{\"id\":\"" + APPROVE_ACTION +
                   "\",\"label\":\"Approve\",\"type\":\"button\"},{\"id\":\"" + REJECT_ACTION +
                   "\",\"label\":\"Reject\",\"type\":\"button\"}]}";
  if (mqtt.publish(pushTopic.c_str(), payload.c_str())) {
    Serial.printf("pushed to %s\n", pushTopic.c_str());
  } else {
    Serial.printf("push failed (MQTT state %d)\n", mqtt.state());
  }
}

bool connectMqtt() {
  Serial.printf("MQTT: connecting to %s:%d as %s ... ", PUSHGATE_HOST, PUSHGATE_MQTT_PORT, DEVICE_NAME);
  // Clean session off: an approval tapped while the board was offline arrives when it reconnects.
  if (!mqtt.connect(DEVICE_NAME, DEVICE_NAME, PUSHGATE_KEY, nullptr, 0, false, nullptr, false)) {
    // 5 = not authorised: a wrong or revoked key; -2 = no TCP connection: host, port or listener address
    Serial.printf("failed, state %d\n", mqtt.state());
    return false;
  }
  Serial.println("connected");
  mqtt.subscribe(actionTopic.c_str(), 1);
  mqtt.subscribe(errorTopic.c_str(), 1);
  Serial.printf("MQTT: subscribed to %s and %s\n", actionTopic.c_str(), errorTopic.c_str());
  return true;
}

// Keeps WiFi and MQTT up without blocking loop(): one attempt, then wait 1 s, 2 s, 4 s ... up to a minute.
bool ensureConnected() {
  if (WiFi.status() == WL_CONNECTED && mqtt.connected()) return true;
  if (attempted && millis() - lastAttemptMs < backoffMs) return false;
  attempted = true;
  lastAttemptMs = millis();
  if (WiFi.status() != WL_CONNECTED) {
    Serial.println("WiFi: not connected, retrying");
    WiFi.reconnect();
  } else if (connectMqtt()) {
    backoffMs = BACKOFF_MIN_MS;
    return true;
  }
  backoffMs = min(backoffMs * 2, BACKOFF_MAX_MS);
  Serial.printf("next attempt in %lu s\n", backoffMs / 1000);
  return false;
}

void setup() {
  Serial.begin(115200);
  pinMode(BUTTON_PIN, INPUT_PULLUP);
  pinMode(LED_PIN, OUTPUT);
  setLed(false);
  Serial.printf("\npushgate esp8266_mqtt: topic %s on %s:%d\n", PUSHGATE_TOPIC, PUSHGATE_HOST,
                PUSHGATE_MQTT_PORT);

  mqtt.setServer(PUSHGATE_HOST, PUSHGATE_MQTT_PORT);
  mqtt.setCallback(onMessage);
  mqtt.setBufferSize(MQTT_BUFFER_BYTES);

  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);
  WiFi.hostname(DEVICE_NAME);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  Serial.printf("WiFi: connecting to %s", WIFI_SSID);
  for (int i = 0; i < 40 && WiFi.status() != WL_CONNECTED; i++) {  // up to 20 s, then loop() retries
    delay(500);
    Serial.print(".");
  }
  if (WiFi.status() == WL_CONNECTED) {
    Serial.print(" connected, IP ");
    Serial.println(WiFi.localIP());
  } else {
    Serial.println(" not yet");
  }
}

void loop() {
  if (ensureConnected()) {
    mqtt.loop();
    int button = digitalRead(BUTTON_PIN);
    if (button != lastButton && millis() - lastEdgeMs > DEBOUNCE_MS) {
      lastEdgeMs = millis();
      lastButton = button;
      if (button == LOW) {
        Serial.println("button pressed");
        publishPress();
      }
    }
  }
  delay(10);
}
