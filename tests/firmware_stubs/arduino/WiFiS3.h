// Host stub of the UNO R4 WiFi's WiFiS3 library (ArduinoCore-renesas), declarations only.
#pragma once

#include "wifi_nina_common.h"

#define WIFI_FIRMWARE_LATEST_VERSION "0.4.1"

class CWifi {
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

extern CWifi WiFi;
