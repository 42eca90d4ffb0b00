// Host stub of Arduino's String class (WString.h), declarations only.
#pragma once

#include <stddef.h>
#include <stdint.h>

class __FlashStringHelper;
class StringSumHelper;

class String {
 public:
  String(const char *cstr = "");
  String(const char *cstr, unsigned int length);
  String(const String &str);
  String(const __FlashStringHelper *str);
  String(String &&rval);
  explicit String(char c);
  explicit String(unsigned char, unsigned char base = 10);
  explicit String(int, unsigned char base = 10);
  explicit String(unsigned int, unsigned char base = 10);
  explicit String(long, unsigned char base = 10);
  explicit String(unsigned long, unsigned char base = 10);
  explicit String(float, unsigned char decimalPlaces = 2);
  explicit String(double, unsigned char decimalPlaces = 2);
  ~String(void);

  bool reserve(unsigned int size);
  unsigned int length(void) const;

  String &operator=(const String &rhs);
  String &operator=(const char *cstr);
  String &operator=(String &&rval);

  bool concat(const String &str);
  bool concat(const char *cstr);
  bool concat(const char *cstr, unsigned int length);
  bool concat(char c);
  bool concat(unsigned char num);
  bool concat(int num);
  bool concat(unsigned int num);
  bool concat(long num);
  bool concat(unsigned long num);
  bool concat(float num);
  bool concat(double num);

  String &operator+=(const String &rhs);
  String &operator+=(const char *cstr);
  String &operator+=(char c);
  String &operator+=(unsigned char num);
  String &operator+=(int num);
  String &operator+=(unsigned int num);
  String &operator+=(long num);
  String &operator+=(unsigned long num);
  String &operator+=(float num);
  String &operator+=(double num);

  friend StringSumHelper &operator+(const StringSumHelper &lhs, const String &rhs);
  friend StringSumHelper &operator+(const StringSumHelper &lhs, const char *cstr);
  friend StringSumHelper &operator+(const StringSumHelper &lhs, char c);
  friend StringSumHelper &operator+(const StringSumHelper &lhs, unsigned char num);
  friend StringSumHelper &operator+(const StringSumHelper &lhs, int num);
  friend StringSumHelper &operator+(const StringSumHelper &lhs, unsigned int num);
  friend StringSumHelper &operator+(const StringSumHelper &lhs, long num);
  friend StringSumHelper &operator+(const StringSumHelper &lhs, unsigned long num);
  friend StringSumHelper &operator+(const StringSumHelper &lhs, float num);
  friend StringSumHelper &operator+(const StringSumHelper &lhs, double num);

  int compareTo(const String &s) const;
  bool equals(const String &s) const;
  bool equals(const char *cstr) const;
  bool operator==(const String &rhs) const;
  bool operator==(const char *cstr) const;
  bool operator!=(const String &rhs) const;
  bool operator!=(const char *cstr) const;
  bool equalsIgnoreCase(const String &s) const;
  bool startsWith(const String &prefix) const;
  bool startsWith(const String &prefix, unsigned int offset) const;
  bool endsWith(const String &suffix) const;

  char charAt(unsigned int index) const;
  void setCharAt(unsigned int index, char c);
  char operator[](unsigned int index) const;
  char &operator[](unsigned int index);
  void toCharArray(char *buf, unsigned int bufsize, unsigned int index = 0) const;
  const char *c_str() const;

  int indexOf(char ch) const;
  int indexOf(char ch, unsigned int fromIndex) const;
  int indexOf(const String &str) const;
  int indexOf(const String &str, unsigned int fromIndex) const;
  int lastIndexOf(char ch) const;
  int lastIndexOf(const String &str) const;
  String substring(unsigned int beginIndex) const;
  String substring(unsigned int beginIndex, unsigned int endIndex) const;

  void replace(char find, char replace);
  void replace(const String &find, const String &replace);
  void remove(unsigned int index);
  void remove(unsigned int index, unsigned int count);
  void toLowerCase(void);
  void toUpperCase(void);
  void trim(void);

  long toInt(void) const;
  float toFloat(void) const;
  double toDouble(void) const;

 protected:
  char *buffer;  // the same representation as the real WString: host/WString.cpp defines what tests run
  unsigned int capacity;
  unsigned int len;
};

class StringSumHelper : public String {
 public:
  StringSumHelper(const String &s);
  StringSumHelper(const char *p);
  StringSumHelper(char c);
  StringSumHelper(unsigned char num);
  StringSumHelper(int num);
  StringSumHelper(unsigned int num);
  StringSumHelper(long num);
  StringSumHelper(unsigned long num);
  StringSumHelper(float num);
  StringSumHelper(double num);
};

#define F(string_literal) (reinterpret_cast<const __FlashStringHelper *>(string_literal))
