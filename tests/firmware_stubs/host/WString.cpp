// Host definitions of the String members that tests/test_firmware.py runs (the sketches' JSON parsing),
// with the semantics of Arduino's WString.cpp. The other stubs stay declarations only.
#include <stdlib.h>
#include <string.h>

#include "WString.h"

String::String(const char *cstr) : buffer(nullptr), capacity(0), len(0) { concat(cstr); }

String::String(const String &str) : buffer(nullptr), capacity(0), len(0) { concat(str); }

String::String(String &&rval) : buffer(rval.buffer), capacity(rval.capacity), len(rval.len) {
  rval.buffer = nullptr;
  rval.capacity = rval.len = 0;
}

String::~String(void) { free(buffer); }

bool String::reserve(unsigned int size) {
  if (buffer && capacity >= size) return true;
  char *grown = static_cast<char *>(realloc(buffer, size + 1));
  if (!grown) return false;
  if (!buffer) grown[0] = '\0';
  buffer = grown;
  capacity = size;
  return true;
}

unsigned int String::length(void) const { return len; }

String &String::operator=(const String &rhs) {
  if (this != &rhs) {
    len = 0;
    concat(rhs);
  }
  return *this;
}

bool String::concat(const char *cstr, unsigned int length) {
  if (!reserve(len + length)) return false;
  memmove(buffer + len, cstr, length);
  len += length;
  buffer[len] = '\0';
  return true;
}

bool String::concat(const char *cstr) { return cstr ? concat(cstr, strlen(cstr)) : false; }

bool String::concat(const String &str) { return concat(str.buffer ? str.buffer : "", str.len); }

bool String::concat(char c) { return concat(&c, 1); }

String &String::operator+=(char c) {
  concat(c);
  return *this;
}

bool String::operator==(const String &rhs) const { return len == rhs.len && strcmp(c_str(), rhs.c_str()) == 0; }

bool String::operator==(const char *cstr) const { return strcmp(c_str(), cstr) == 0; }

char String::operator[](unsigned int index) const { return index < len ? buffer[index] : '\0'; }

const char *String::c_str() const { return buffer ? buffer : ""; }

int String::indexOf(char ch, unsigned int fromIndex) const {
  if (fromIndex >= len) return -1;
  const char *found = strchr(buffer + fromIndex, ch);
  return found ? static_cast<int>(found - buffer) : -1;
}

int String::indexOf(char ch) const { return indexOf(ch, 0); }

int String::indexOf(const String &str, unsigned int fromIndex) const {
  if (fromIndex >= len) return -1;
  const char *found = strstr(buffer + fromIndex, str.c_str());
  return found ? static_cast<int>(found - buffer) : -1;
}

int String::indexOf(const String &str) const { return indexOf(str, 0); }

String String::substring(unsigned int beginIndex, unsigned int endIndex) const {
  if (beginIndex > endIndex) {
    unsigned int swap = endIndex;
    endIndex = beginIndex;
    beginIndex = swap;
  }
  String out;
  if (beginIndex >= len) return out;
  if (endIndex > len) endIndex = len;
  out.concat(buffer + beginIndex, endIndex - beginIndex);
  return out;
}

StringSumHelper::StringSumHelper(const String &s) : String(s) {}

StringSumHelper::StringSumHelper(const char *p) : String(p) {}

StringSumHelper &operator+(const StringSumHelper &lhs, const String &rhs) {
  StringSumHelper &a = const_cast<StringSumHelper &>(lhs);
  a.concat(rhs);
  return a;
}

StringSumHelper &operator+(const StringSumHelper &lhs, const char *cstr) {
  StringSumHelper &a = const_cast<StringSumHelper &>(lhs);
  a.concat(cstr);
  return a;
}
