# pushgate MicroPython example (ESP32, ESP8266, Raspberry Pi Pico W).
#
# A press of the button publishes a notification with Approve and Reject buttons on
# pushgate/<topic>/push at QoS 1 (publish() returns once pushgate stored it). An Approve tapped on the hub
# or the phone comes back on pushgate/<topic>/action and lights the LED; Reject turns it off. The topic key
# is the MQTT password. Lost connections are retried with exponential backoff. Settings are in config.py.
import json

import machine
import network
import ubinascii
import utime as time
from umqtt.simple import MQTTClient

import config

# pushgate's MQTT contract: the device publishes on <prefix>/<topic>/push and reads the gateway's
# <prefix>/<topic>/action (actions taken) and <prefix>/<topic>/error (a refused push, with the reason).
PUSH_TOPIC = config.PUSHGATE_PREFIX + "/" + config.PUSHGATE_TOPIC + "/push"
ACTION_TOPIC = config.PUSHGATE_PREFIX + "/" + config.PUSHGATE_TOPIC + "/action"
ERROR_TOPIC = config.PUSHGATE_PREFIX + "/" + config.PUSHGATE_TOPIC + "/error"

APPROVE_ACTION = "approve"
REJECT_ACTION = "reject"

BACKOFF_MIN_MS = 1000  # first retry after a second
BACKOFF_MAX_MS = 60000  # then 2, 4, 8 ... never more than a minute apart
KEEPALIVE_S = 60  # the broker drops a silent client after 1.5 times this; we ping at half of it
DEBOUNCE_MS = 50  # a button bounces for a few milliseconds
WIFI_TIMEOUT_MS = 20000
LOOP_MS = 10


class Device:
    """The board: a button, an LED, WiFi and one MQTT connection to pushgate."""

    def __init__(self):
        self.button = machine.Pin(config.BUTTON_PIN, machine.Pin.IN, machine.Pin.PULL_UP)
        self.led = machine.Pin(config.LED_PIN, machine.Pin.OUT, value=0)
        self.wlan = network.WLAN(network.STA_IF)
        self.name = config.DEVICE_NAME or ubinascii.hexlify(machine.unique_id()).decode()
        self.client = None
        self.backoff_ms = BACKOFF_MIN_MS
        self.next_attempt = time.ticks_ms()
        self.last_ping = time.ticks_ms()
        self.last_button = self.button.value()
        self.last_edge = time.ticks_ms()

    def connect_wifi(self):
        if self.wlan.isconnected():
            return True
        print("WiFi: connecting to", config.WIFI_SSID)
        self.wlan.active(True)
        self.wlan.connect(config.WIFI_SSID, config.WIFI_PASSWORD)
        started = time.ticks_ms()
        while not self.wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), started) > WIFI_TIMEOUT_MS:
                print("WiFi: not connected, status", self.wlan.status())
                return False
            time.sleep_ms(200)
        print("WiFi: connected, IP", self.wlan.ifconfig()[0])
        return True

    def connect_mqtt(self):
        print(f"MQTT: connecting to {config.PUSHGATE_HOST}:{config.PUSHGATE_MQTT_PORT} as {self.name}")
        client = MQTTClient(
            self.name,
            config.PUSHGATE_HOST,
            port=config.PUSHGATE_MQTT_PORT,
            user=self.name,
            password=config.PUSHGATE_KEY,
            keepalive=KEEPALIVE_S,
        )
        client.set_callback(self.on_message)
        try:
            # Clean session off: an approval tapped while the board was offline arrives when it reconnects.
            client.connect(clean_session=False, timeout=10)
            client.subscribe(ACTION_TOPIC, qos=1)
            client.subscribe(ERROR_TOPIC, qos=1)
        except Exception:
            if client.sock is not None:
                client.sock.close()
            raise
        print("MQTT: connected, subscribed to", ACTION_TOPIC, "and", ERROR_TOPIC)
        self.client = client
        self.last_ping = time.ticks_ms()

    def ensure_connected(self):
        """One connection attempt when it is due; after a failure wait 1 s, 2 s, 4 s ... up to a minute."""
        if self.client is not None:
            return True
        if time.ticks_diff(time.ticks_ms(), self.next_attempt) < 0:
            return False
        try:
            if self.connect_wifi():
                self.connect_mqtt()
                self.backoff_ms = BACKOFF_MIN_MS
                return True
        except Exception as exc:  # OSError: no route or refused; MQTTException(5): a wrong or revoked key
            print("MQTT: failed:", type(exc).__name__, *exc.args)
        self.next_attempt = time.ticks_add(time.ticks_ms(), self.backoff_ms)
        print("next attempt in", self.backoff_ms // 1000, "s")
        self.backoff_ms = min(self.backoff_ms * 2, BACKOFF_MAX_MS)
        return False

    def drop(self, why):
        print("MQTT: connection lost:", why)
        try:
            self.client.sock.close()
        except Exception:
            pass
        self.client = None

    def on_message(self, topic, msg):
        topic = topic.decode()
        if topic == ERROR_TOPIC:
            print("pushgate refused a push:", msg.decode())
            return
        try:
            event = json.loads(msg)
        except ValueError:
            print("not JSON on", topic)
            return
        action_id = event.get("action_id")
        print("action", action_id, "on message", event.get("message_id"))
        if action_id == APPROVE_ACTION:
            self.led.on()
            print("LED on")
        elif action_id == REJECT_ACTION:
            self.led.off()
            print("LED off")

    def publish_press(self):
        notification = {
            "title": "Button pressed",
            "message": self.name + ": approve?",
            "priority": "high",
            "actions": [
                {"id": APPROVE_ACTION, "label": "Approve", "type": "button"},
                {"id": REJECT_ACTION, "label": "Reject", "type": "button"},
            ],
        }
        # QoS 1: returns once pushgate's PUBACK came, which it sends after the message is on disk.
        self.client.publish(PUSH_TOPIC, json.dumps(notification), qos=1)
        print("pushed to", PUSH_TOPIC)

    def button_pressed(self):
        """True once per press: a falling edge (pull-up input) that is not contact bounce."""
        value = self.button.value()
        if value == self.last_button or time.ticks_diff(time.ticks_ms(), self.last_edge) <= DEBOUNCE_MS:
            return False
        self.last_button = value
        self.last_edge = time.ticks_ms()
        return value == 0

    def step(self):
        """One pass of the main loop: connect when due, read what arrived, react to the button, ping."""
        if not self.ensure_connected():
            return
        try:
            self.client.check_msg()
            if self.button_pressed():
                print("button pressed")
                self.publish_press()
            if time.ticks_diff(time.ticks_ms(), self.last_ping) > KEEPALIVE_S * 1000 // 2:
                self.client.ping()
                self.last_ping = time.ticks_ms()
        except OSError as exc:
            self.drop(repr(exc))
            self.next_attempt = time.ticks_add(time.ticks_ms(), self.backoff_ms)

    def run(self, max_iterations=None):
        """The main loop, for ever on the board; ``max_iterations`` lets a test or the REPL run a few."""
        done = 0
        while max_iterations is None or done < max_iterations:
            self.step()
            time.sleep_ms(LOOP_MS)
            done += 1


def main():
    print("pushgate micropython: topic", config.PUSHGATE_TOPIC, "on", config.PUSHGATE_HOST)
    Device().run()


if __name__ == "__main__":
    main()
