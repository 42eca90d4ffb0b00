// Host stub of arduino-esp32's WiFiClient, declarations only.
#pragma once

#include <Arduino.h>

#include "Client.h"

class WiFiClient : public Client {
 public:
  WiFiClient();
  ~WiFiClient();
  int connect(IPAddress ip, uint16_t port) override;
  int connect(IPAddress ip, uint16_t port, int32_t timeout_ms);
  int connect(const char *host, uint16_t port) override;
  int connect(const char *host, uint16_t port, int32_t timeout_ms);
  size_t write(uint8_t data) override;
  size_t write(const uint8_t *buf, size_t size) override;
  int available() override;
  int read() override;
  int read(uint8_t *buf, size_t size) override;
  int peek() override;
  void flush() override;
  void stop() override;
  uint8_t connected() override;
  operator bool() override;
  void setTimeout(uint32_t seconds);
  using Print::write;
};
