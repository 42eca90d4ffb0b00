// Host stub of the Arduino core API (declarations only; see ../README.md). Signatures follow the
// Arduino API (ArduinoCore-API 1.x, as in arduino-esp32, the ESP8266 core, SAMD and Renesas cores).
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "WString.h"
#include "Print.h"
#include "Stream.h"
#include "IPAddress.h"
#include "Client.h"

typedef bool boolean;
typedef uint8_t byte;
typedef unsigned int word;

#define HIGH 0x1
#define LOW 0x0

#define INPUT 0x0
#define OUTPUT 0x1
#define INPUT_PULLUP 0x2

#define CHANGE 2
#define FALLING 3
#define RISING 4

// The board's LED, as the variant files of the Arduino boards define it (ESP32 boards differ, so none there).
#if defined(ARDUINO_SAMD_NANO_33_IOT) || defined(ARDUINO_UNOR4_WIFI)
#define LED_BUILTIN 13
#elif defined(ESP8266)
#define LED_BUILTIN 2
#endif

void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t val);
int digitalRead(uint8_t pin);
int analogRead(uint8_t pin);
void analogWrite(uint8_t pin, int value);

unsigned long millis(void);
unsigned long micros(void);
void delay(unsigned long ms);
void delayMicroseconds(unsigned int us);
void yield(void);

long random(long howbig);
long random(long howsmall, long howbig);
void randomSeed(unsigned long seed);

// arduino-esp32 and the ESP8266 core take min/max from <algorithm> (AVR has macros): same types only.
#include <algorithm>
using std::max;
using std::min;

class HardwareSerial : public Stream {
 public:
  void begin(unsigned long baud);
  void end();
  int available() override;
  int read() override;
  int peek() override;
  void flush() override;
  size_t write(uint8_t c) override;
  size_t write(const uint8_t *buffer, size_t size) override;
  using Print::write;
  operator bool() const;
};

extern HardwareSerial Serial;

void setup(void);
void loop(void);
