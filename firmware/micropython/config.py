# Settings of the pushgate MicroPython example: fill in the first block, leave the rest as it is unless
# your board or your gateway differs. Copy this file to the board next to main.py.

# ---- fill these in ------------------------------------------------------------------------------
WIFI_SSID = "your-wifi"
WIFI_PASSWORD = "your-wifi-password"

# The machine that runs pushgate, as the board reaches it on your LAN (pushgate must listen there:
# PUSHGATE_MQTT_HOST=0.0.0.0 pushgate serve).
PUSHGATE_HOST = "192.168.1.10"
# The topic to push to, and one of its keys (pushgate key create alarm --label pico).
PUSHGATE_TOPIC = "alarm"
PUSHGATE_KEY = "pk_0123456789ab_replace-with-the-key-pushgate-printed"
# MQTT client id and username: any name that is unique on your broker (the key is the password).
# "" uses the board's unique id.
DEVICE_NAME = "pico-door"

# ---- gateway -------------------------------------------------------------------------------------
PUSHGATE_MQTT_PORT = 1883  # pushgate's MQTT port ([mqtt] port)
PUSHGATE_PREFIX = "pushgate"  # the root of pushgate's MQTT topics ([mqtt] prefix)

# ---- board ---------------------------------------------------------------------------------------
# ESP32 dev board: the BOOT button (0) and the on-board LED (2). Raspberry Pi Pico W: a button from
# GP15 to GND (15) and the on-board LED ("LED").
BUTTON_PIN = 0  # pressed = 0 (input with pull-up)
LED_PIN = 2
