// pushgate MQTT example for Arduino WiFi boards: UNO R4 WiFi (WiFiS3) and the WiFiNINA boards (Nano 33
// IoT, MKR WiFi 1010, Nano RP2040 Connect), with the ArduinoMqttClient library.
//
// A press of the button publishes a notification with Approve and Reject buttons on
// pushgate/<topic>/push at QoS 1: endMessage() returns once pushgate stored it. An Approve tapped on the
// hub or the phone comes back on pushgate/<topic>/action and lights the LED (Reject turns it off). The
// topic key is the MQTT password. Lost connections are retried with exponential backoff. Settings are in
// config.h.
#if defined(ARDUINO_UNOR4_WIFI)
#include <WiFiS3.h>
#else
#include <WiFiNINA.h>
#endif
#include <ArduinoMqttClient.h>

#include "config.h"

// pushgate's MQTT contract: the device publishes on <prefix>/<topic>/push and reads the gateway's
// <prefix>/<topic>/action (actions taken) and <prefix>/<topic>/error (a refused push, with the reason).
const String pushTopic = String(PUSHGATE_PREFIX) + "/" + PUSHGATE_TOPIC + "/push";
const String actionTopic = String(PUSHGATE_PREFIX) + "/" + PUSHGATE_TOPIC + "/action";
const String errorTopic = String(PUSHGATE_PREFIX) + "/" + PUSHGATE_TOPIC + "/error";

const char *const APPROVE_ACTION = "approve";
const char *const REJECT_ACTION = "reject";

const unsigned long BACKOFF_MIN_MS = 1000;          // first retry after a second
const unsigned long BACKOFF_MAX_MS = 60000;         // then 2, 4, 8 ... never more than a minute apart
const unsigned long KEEP_ALIVE_MS = 30000;          // a dead link is noticed within a minute
const unsigned long DEBOUNCE_MS = 50;
const unsigned int MAX_EVENT_BYTES = 1024;          // larger payloads are not for us: skipped

WiFiClient net;
MqttClient mqtt(net);

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

void onMessage(int messageSize) {
  String topic = mqtt.messageTopic();
  String body;
  if (messageSize > 0 && (unsigned int)messageSize <= MAX_EVENT_BYTES) body.reserve(messageSize);
  while (mqtt.available()) {
    int c = mqtt.read();
    if (body.length() < MAX_EVENT_BYTES) body += (char)c;
  }
  if (topic == errorTopic) {
    Serial.print("pushgate refused a push: ");
    Serial.println(body);
    return;
  }
  String actionId = jsonString(body, "action_id");
  Serial.print("action ");
  Serial.print(actionId);
  Serial.print(" on message ");
  Serial.println(jsonString(body, "message_id"));
  if (actionId == APPROVE_ACTION) {
    digitalWrite(LED_PIN, HIGH);
    Serial.println("LED on");
  } else if (actionId == REJECT_ACTION) {
    digitalWrite(LED_PIN, LOW);
    Serial.println("LED off");
  }
}

void publishPress() {
  String payload = String("{\"title\":\"Button pressed\",\"message\":\"") + DEVICE_NAME +
                   ": approve?\",\"priority\":\"high\",\"actions\":[{\"id\":\"" + APPROVE_ACTION +
                   "\",\"label\":\"Approve\",\"type\":\"button\"},{\"id\":\"" + REJECT_ACTION +
                   "\",\"label\":\"Reject\",\"type\":\"button\"}]}";
  // QoS 1: pushgate sends the PUBACK once the message is on disk, and endMessage() waits for it.
  mqtt.beginMessage(pushTopic, payload.length(), false, 1);
  mqtt.print(payload);
  if (mqtt.endMessage()) {
    Serial.print("pushed to ");
    Serial.println(pushTopic);
  } else {
    Serial.println("push failed: no PUBACK (connection lost?)");
  }
}

bool connectWifi() {
  Serial.print("WiFi: connecting to ");
  Serial.println(WIFI_SSID);
  if (WiFi.begin(WIFI_SSID, WIFI_PASSWORD) != WL_CONNECTED) {
    Serial.println("WiFi: failed");
    return false;
  }
  Serial.print("WiFi: connected, IP ");
  Serial.println(WiFi.localIP());
  return true;
}

bool connectMqtt() {
  Serial.print("MQTT: connecting to ");
  Serial.print(PUSHGATE_HOST);
  Serial.print(":");
  Serial.print(PUSHGATE_MQTT_PORT);
  Serial.print(" as ");
  Serial.println(DEVICE_NAME);
  if (!mqtt.connect(PUSHGATE_HOST, PUSHGATE_MQTT_PORT)) {
    // 5 = not authorised: a wrong or revoked key; -2 = refused: host, port or listener address
    Serial.print("MQTT: failed, error ");
    Serial.println(mqtt.connectError());
    return false;
  }
  Serial.println("MQTT: connected");
  mqtt.subscribe(actionTopic, 1);
  mqtt.subscribe(errorTopic, 1);
  Serial.print("MQTT: subscribed to ");
  Serial.print(actionTopic);
  Serial.print(" and ");
  Serial.println(errorTopic);
  return true;
}

// Keeps WiFi and MQTT up: one attempt, then wait 1 s, 2 s, 4 s ... up to a minute before the next.
bool ensureConnected() {
  if (WiFi.status() == WL_CONNECTED && mqtt.connected()) return true;
  if (attempted && millis() - lastAttemptMs < backoffMs) return false;
  attempted = true;
  lastAttemptMs = millis();
  if ((WiFi.status() == WL_CONNECTED || connectWifi()) && connectMqtt()) {
    backoffMs = BACKOFF_MIN_MS;
    return true;
  }
  backoffMs = min(backoffMs * 2, BACKOFF_MAX_MS);
  Serial.print("next attempt in ");
  Serial.print(backoffMs / 1000);
  Serial.println(" s");
  return false;
}

void setup() {
  Serial.begin(115200);
  while (!Serial && millis() < 3000) {
  }  // boards with native USB: give the serial monitor a moment
  pinMode(BUTTON_PIN, INPUT_PULLUP);
  pinMode(LED_PIN, OUTPUT);
  digitalWrite(LED_PIN, LOW);
  Serial.print("pushgate arduino_wifi_mqtt: topic ");
  Serial.println(PUSHGATE_TOPIC);
  if (WiFi.status() == WL_NO_MODULE) {
    Serial.println("no WiFi module found: is this a WiFiNINA or UNO R4 WiFi board?");
    while (true) {
    }
  }
  mqtt.setId(DEVICE_NAME);
  mqtt.setUsernamePassword(DEVICE_NAME, PUSHGATE_KEY);
  // Clean session off: an approval tapped while the board was offline arrives when it reconnects.
  mqtt.setCleanSession(false);
  mqtt.setKeepAliveInterval(KEEP_ALIVE_MS);
  mqtt.onMessage(onMessage);
}

void loop() {
  if (ensureConnected()) {
    mqtt.poll();
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
