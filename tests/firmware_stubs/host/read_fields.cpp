// A host program around a sketch's jsonString(): reads a JSON payload on stdin and prints
// "<field>=<value>" for each field named on the command line (tests/test_firmware_contract.py).
#include <Arduino.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

String jsonString(const String &json, const char *field);  // the sketch's, linked in beside this file

int main(int argc, char **argv) {
  std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  String json(in.c_str());
  for (int i = 1; i < argc; i++) std::printf("%s=%s\n", argv[i], jsonString(json, argv[i]).c_str());
  return 0;
}
