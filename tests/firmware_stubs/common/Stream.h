// Host stub of Arduino's Stream class, declarations only.
#pragma once

#include "Print.h"

class Stream : public Print {
 public:
  virtual int available() = 0;
  virtual int read() = 0;
  virtual int peek() = 0;
  virtual void flush();
  void setTimeout(unsigned long timeout);
  size_t readBytes(char *buffer, size_t length);
  size_t readBytes(uint8_t *buffer, size_t length);
  String readString();
  String readStringUntil(char terminator);
};
