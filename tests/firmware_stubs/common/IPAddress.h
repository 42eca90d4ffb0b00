// Host stub of Arduino's IPAddress, declarations only.
#pragma once

#include <stdint.h>

#include "Print.h"

class IPAddress : public Printable {
 public:
  IPAddress();
  IPAddress(uint8_t first_octet, uint8_t second_octet, uint8_t third_octet, uint8_t fourth_octet);
  IPAddress(uint32_t address);
  IPAddress(const uint8_t *address);
  bool fromString(const char *address);
  bool fromString(const String &address);
  operator uint32_t() const;
  bool operator==(const IPAddress &addr) const;
  uint8_t operator[](int index) const;
  String toString() const;
  size_t printTo(Print &p) const override;
};
