// Host stub of ArduinoMqttClient 0.1.8 (arduino-libraries/ArduinoMqttClient src/MqttClient.h), declarations only.
#pragma once

#include <Arduino.h>

#include "Client.h"

#define MQTT_CONNECTION_REFUSED -2
#define MQTT_CONNECTION_TIMEOUT -1
#define MQTT_SUCCESS 0
#define MQTT_UNACCEPTABLE_PROTOCOL_VERSION 1
#define MQTT_IDENTIFIER_REJECTED 2
#define MQTT_SERVER_UNAVAILABLE 3
#define MQTT_BAD_USER_NAME_OR_PASSWORD 4
#define MQTT_NOT_AUTHORIZED 5

#ifdef MQTT_CLIENT_STD_FUNCTION_CALLBACK
#include <functional>
#endif

class MqttClient : public Client {
 public:
  MqttClient(Client &client);
  virtual ~MqttClient();

#ifdef MQTT_CLIENT_STD_FUNCTION_CALLBACK
  typedef std::function<void(MqttClient *client, int messageSize)> MessageCallback;
  void onMessage(MessageCallback callback);
#else
  void onMessage(void (*)(int));
#endif

  int parseMessage();
  String messageTopic() const;
  int messageDup() const;
  int messageQoS() const;
  int messageRetain() const;

  int beginMessage(const char *topic, unsigned long size, bool retain = false, uint8_t qos = 0, bool dup = false);
  int beginMessage(const String &topic, unsigned long size, bool retain = false, uint8_t qos = 0,
                   bool dup = false);
  int beginMessage(const char *topic, bool retain = false, uint8_t qos = 0, bool dup = false);
  int beginMessage(const String &topic, bool retain = false, uint8_t qos = 0, bool dup = false);
  int endMessage();

  int beginWill(const char *topic, unsigned short size, bool retain, uint8_t qos);
  int beginWill(const String &topic, unsigned short size, bool retain, uint8_t qos);
  int beginWill(const char *topic, bool retain, uint8_t qos);
  int beginWill(const String &topic, bool retain, uint8_t qos);
  int endWill();

  int subscribe(const char *topic, uint8_t qos = 0);
  int subscribe(const String &topic, uint8_t qos = 0);
  int unsubscribe(const char *topic);
  int unsubscribe(const String &topic);

  void poll();

  virtual int connect(IPAddress ip, uint16_t port = 1883);
  virtual int connect(const char *host, uint16_t port = 1883);
  virtual size_t write(uint8_t);
  virtual size_t write(const uint8_t *buf, size_t size);
  virtual int available();
  virtual int read();
  virtual int read(uint8_t *buf, size_t size);
  virtual int peek();
  virtual void flush();
  virtual void stop();
  virtual uint8_t connected();
  virtual operator bool();
  using Print::write;

  void setId(const char *id);
  void setId(const String &id);
  void setUsernamePassword(const char *username, const char *password);
  void setUsernamePassword(const String &username, const String &password);
  void setCleanSession(bool cleanSession);
  void setKeepAliveInterval(unsigned long interval);
  void setConnectionTimeout(unsigned long timeout);

  int connectError() const;
  int subscribeQoS() const;
};
