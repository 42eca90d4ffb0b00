// Host stub of the ESP8266 Arduino core's ESP8266WiFi library (3.x), declarations only.
#pragma once

#include <Arduino.h>

#include "Client.h"
#include "IPAddress.h"

typedef enum {
  WL_NO_SHIELD = 255,
  WL_IDLE_STATUS = 0,
  WL_NO_SSID_AVAIL = 1,
  WL_SCAN_COMPLETED = 2,
  WL_CONNECTED = 3,
  WL_CONNECT_FAILED = 4,
  WL_CONNECTION_LOST = 5,
  WL_WRONG_PASSWORD = 6,
  WL_DISCONNECTED = 7
} wl_status_t;

typedef enum WiFiMode { WIFI_OFF = 0, WIFI_STA = 1, WIFI_AP = 2, WIFI_AP_STA = 3 } WiFiMode_t;

struct WiFiState;

class ESP8266WiFiClass {
 public:
  bool mode(WiFiMode_t, WiFiState *state = nullptr);
  WiFiMode_t getMode();
  wl_status_t begin(const char *ssid, const char *passphrase = NULL, int32_t channel = 0,
                    const uint8_t *bssid = NULL, bool connect = true);
  wl_status_t begin(const String &ssid, const String &passphrase = String(), int32_t channel = 0,
                    const uint8_t *bssid = NULL, bool connect = true);
  wl_status_t begin();
  wl_status_t status();
  bool reconnect();
  bool disconnect(bool wifioff = false);
  bool isConnected();
  bool setAutoReconnect(bool autoReconnect);
  bool getAutoReconnect();
  bool hostname(const char *aHostname);
  bool hostname(const String &aHostname);
  String hostname();
  IPAddress localIP();
  String macAddress();
  String SSID() const;
  int32_t RSSI();
};

extern ESP8266WiFiClass WiFi;

class WiFiClient : public Client {
 public:
  WiFiClient();
  virtual ~WiFiClient();
  int connect(IPAddress ip, uint16_t port) override;
  int connect(const char *host, uint16_t port) override;
  int connect(const String &host, uint16_t port);
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
  void setNoDelay(bool nodelay);
  using Print::write;
};

class EspClass {
 public:
  uint32_t getChipId();
  void restart();
  uint32_t getFreeHeap();
};

extern EspClass ESP;
