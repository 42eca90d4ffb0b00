// Shared part of the WiFiNINA and WiFiS3 stubs: both libraries declare these names the same way.
#pragma once

#include <Arduino.h>

#include "Client.h"
#include "IPAddress.h"

typedef enum {
  WL_NO_SHIELD = 255,
  WL_NO_MODULE = WL_NO_SHIELD,
  WL_IDLE_STATUS = 0,
  WL_NO_SSID_AVAIL,
  WL_SCAN_COMPLETED,
  WL_CONNECTED,
  WL_CONNECT_FAILED,
  WL_CONNECTION_LOST,
  WL_DISCONNECTED,
  WL_AP_LISTENING,
  WL_AP_CONNECTED,
  WL_AP_FAILED
} wl_status_t;

class WiFiClient : public Client {
 public:
  WiFiClient();
  int connect(IPAddress ip, uint16_t port) override;
  int connect(const char *host, uint16_t port) override;
  size_t write(uint8_t) override;
  size_t write(const uint8_t *buf, size_t size) override;
  int available() override;
  int read() override;
  int read(uint8_t *buf, size_t size) override;
  int peek() override;
  void flush() override;
  void stop() override;
  uint8_t connected() override;
  operator bool() override;
  using Print::write;
};

class WiFiSSLClient : public WiFiClient {
 public:
  WiFiSSLClient();
  int connect(IPAddress ip, uint16_t port) override;
  int connect(const char *host, uint16_t port) override;
};
