// Host stub of arduino-esp32's WiFi library (WiFi.h, WiFiSTA.h, WiFiGeneric.h), declarations only.
#pragma once

#include <Arduino.h>

#include "IPAddress.h"
#include "WiFiClient.h"
#include "WiFiType.h"

class WiFiClass {
 public:
  bool mode(wifi_mode_t mode);
  wifi_mode_t getMode();
  wl_status_t begin(const char *ssid, const char *passphrase = NULL, int32_t channel = 0,
                    const uint8_t *bssid = NULL, bool connect = true);
  wl_status_t begin();
  wl_status_t status();
  bool reconnect();
  bool disconnect(bool wifioff = false, bool eraseap = false);
  bool isConnected();
  bool setAutoReconnect(bool autoReconnect);
  bool getAutoReconnect();
  bool setHostname(const char *hostname);
  const char *getHostname();
  IPAddress localIP();
  IPAddress gatewayIP();
  String macAddress();
  String SSID() const;
  int8_t RSSI();
};

extern WiFiClass WiFi;
