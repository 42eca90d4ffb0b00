// Host stub of the WiFiNINA library (Nano 33 IoT, MKR WiFi 1010, Nano RP2040 Connect), declarations only.
#pragma once

#include "wifi_nina_common.h"

#define WIFI_FIRMWARE_LATEST_VERSION "1.5.0"

class WiFiClass {
 public:
  static const char *firmwareVersion();
  int begin(const char *ssid);
  int begin(const char *ssid, const char *passphrase);
  uint8_t status();
  int disconnect(void);
  void end(void);
  void setHostname(const char *name);
  uint8_t *macAddress(uint8_t *mac);
  IPAddress localIP();
  int32_t RSSI();
  const char *SSID();
};

extern WiFiClass WiFi;
