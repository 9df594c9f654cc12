// A Roost device on an ESP32 (Arduino): MQTT over TLS with PubSubClient and WiFiClientSecure.
//
// It joins Wi-Fi, sets its clock by NTP (TLS checks the certificate's dates), connects to
// Roost's MQTT-over-TLS port trusting only the platform CA, with its device id as the MQTT
// username and its token as the password; then it publishes a `boot` event once, telemetry in
// the key/value form every 10 s, answers commands on devices/{id}/commands/+ and reports back
// the desired state it is sent on devices/{id}/state/delta. A lost connection is retried with
// exponential backoff and jitter. Not compiled by Roost's CI: see README.md beside this folder.
//
// PubSubClient publishes at QoS 0 only: the server stores what arrives, but the sketch cannot
// know that it did (no PUBACK). It subscribes at QoS 1, so commands are acknowledged (DELIVERED).

#include <WiFi.h>
#include <WiFiClientSecure.h>
#include <PubSubClient.h>
#include <esp_system.h>
#include <sys/time.h>
#include <time.h>

// ---- settings: fill these in -------------------------------------------------------------------

static const char *WIFI_SSID = "my-network";
static const char *WIFI_PASSWORD = "my-password";
// The server's name as its certificate states it (ROOST_TLS_HOSTNAMES), and ROOST_MQTTS_PORT.
static const char *ROOST_MQTT_HOST = "roost.example.net";
static const uint16_t ROOST_MQTT_PORT = 8883;
static const char *DEVICE_ID = "paris-display-01";
// `roost device token paris-display-01` (a JWT of about 300 characters), or a SAS token.
static const char *DEVICE_TOKEN = "eyJ...";
// The platform CA: `curl -s https://roost.example.net/api/v1/ca` ("certificate"), or
// <data dir>/ca/ca.pem on the server. Paste the whole PEM, BEGIN and END lines included.
static const char *ROOST_CA_PEM = R"PEM(
-----BEGIN CERTIFICATE-----
...
-----END CERTIFICATE-----
)PEM";

// ---- tunables ---------------------------------------------------------------------------------

// PubSubClient keeps one buffer for the whole of every packet it sends or receives; its default,
// 256 bytes, cannot even hold the CONNECT packet with a ~300-character token, and a message
// larger than the buffer is dropped without a word. 4 KiB holds the token, a command with its
// parameters and a state delta of ordinary size (Roost allows state documents up to 8 KiB).
static const uint16_t MQTT_BUFFER_BYTES = 4096;
static const unsigned long TELEMETRY_EVERY_MS = 10000;
// Seconds of silence before a PINGREQ; the server drops the session after 1.5 times that.
static const uint16_t KEEPALIVE_S = 30;
// Reconnects wait twice as long after each failure, from 1 s up to 60 s, with jitter so that a
// store full of displays cut off at once does not come back at once.
static const unsigned long RECONNECT_MIN_MS = 1000;
static const unsigned long RECONNECT_MAX_MS = 60000;
static const char *CLIENT = "esp32-pubsubclient";

// ---- state ------------------------------------------------------------------------------------

WiFiClientSecure net;
PubSubClient mqtt(net);
String prefix;  // devices/{id}
unsigned long backoffMs = RECONNECT_MIN_MS;
unsigned long nextAttemptMs = 0;
unsigned long lastTelemetryMs = 0;
bool bootSent = false;
bool rebootRequested = false;
unsigned long telemetryCount = 0;

// Epoch milliseconds as decimal digits (the server tells s from ms by magnitude).
String nowMs() {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  char buf[24];
  snprintf(buf, sizeof buf, "%ld%03ld", (long)tv.tv_sec, (long)(tv.tv_usec / 1000));
  return String(buf);
}

// ---- a little JSON reading (Roost sends compact JSON; ArduinoJson would do for more) -----------

// Where the value of "key" starts in json (after the colon and any spaces), or nullptr.
static const char *jsonValue(const char *json, const char *key) {
  String pattern = String("\"") + key + "\":";
  const char *at = strstr(json, pattern.c_str());
  if (!at) return nullptr;
  at += pattern.length();
  while (*at == ' ') ++at;
  return at;
}

// The string value of the first field named key (commands put "name" before "params").
String jsonString(const char *json, const char *key) {
  const char *at = jsonValue(json, key);
  if (!at || *at != '"') return "";
  const char *end = strchr(at + 1, '"');
  return end ? String(at + 1).substring(0, end - at - 1) : String("");
}

// The object value of the first field named key, braces matched and strings skipped, or "".
String jsonObject(const char *json, const char *key) {
  const char *start = jsonValue(json, key);
  if (!start || *start != '{') return "";
  int depth = 0;
  bool inString = false;
  for (const char *p = start; *p; ++p) {
    if (inString) {
      if (*p == '\\' && p[1]) ++p;
      else if (*p == '"') inString = false;
    } else if (*p == '"') {
      inString = true;
    } else if (*p == '{') {
      ++depth;
    } else if (*p == '}' && --depth == 0) {
      return String(start).substring(0, p - start + 1);
    }
  }
  return "";
}

// ---- up: telemetry and events -----------------------------------------------------------------

bool publish(const String &suffix, const String &body) {
  String topic = prefix + "/" + suffix;
  bool ok = mqtt.publish(topic.c_str(), body.c_str());
  if (!ok) Serial.printf("publish to %s failed (larger than the buffer?)\n", topic.c_str());
  return ok;
}

void sendTelemetry() {
  telemetryCount++;
  char values[160];
  // "%.2f" always writes a decimal point: a sensor created by 41 would be a long sensor.
  snprintf(values, sizeof values,
           "{\"temperature\":%.2f,\"free_heap\":%u,\"rssi\":%d,\"uptime_s\":%lu,\"count\":%lu}",
           temperatureRead(), (unsigned)ESP.getFreeHeap(), (int)WiFi.RSSI(), millis() / 1000,
           telemetryCount);
  String body = String("{\"ts\":") + nowMs() + ",\"values\":" + values + "}";
  if (publish("telemetry", body)) Serial.printf("telemetry: %s\n", body.c_str());
}

void sendBootEvent() {
  String body = String("{\"event\":\"boot\",\"ts\":") + nowMs() + ",\"client\":\"" + CLIENT +
                "\",\"reset_reason\":" + String((int)esp_reset_reason()) + "}";
  bootSent = publish("events", body);
}

// ---- down: commands and state -----------------------------------------------------------------

String runCommand(const String &name) {
  if (name == "ping") {
    return String("{\"status\":\"SUCCEEDED\",\"result\":{\"pong\":true,\"uptime_s\":") +
           String(millis() / 1000) + ",\"client\":\"" + CLIENT + "\"}}";
  }
  if (name == "reboot") {
    rebootRequested = true;  // after the answer has gone out (see loop)
    return "{\"status\":\"SUCCEEDED\",\"result\":{\"rebooting\":true}}";
  }
  return String("{\"status\":\"FAILED\",\"result\":{\"error\":\"unknown command '") + name +
         "'\"}}";
}

void onMessage(char *topicIn, byte *payloadIn, unsigned int length) {
  // PubSubClient receives into the buffer it also sends from: copy before publishing anything.
  String topic(topicIn);
  String body;
  body.reserve(length);
  for (unsigned int i = 0; i < length; i++) body += (char)payloadIn[i];

  String commands = prefix + "/commands/";
  if (topic.startsWith(commands)) {
    // devices/{id}/commands/{cmd_id}: {"id", "name", "params"}. Delivery is at least once; a
    // device whose commands must not run twice remembers the last ids it answered.
    String cmdId = topic.substring(commands.length());
    String name = jsonString(body.c_str(), "name");
    String answer = runCommand(name);
    Serial.printf("command %s %s -> %s\n", cmdId.c_str(), name.c_str(), answer.c_str());
    publish("commands/" + cmdId + "/response", answer);
  } else if (topic == prefix + "/state/delta") {
    // {"version", "delta": {...}, "timestamp"}: apply the fields (switch the light, set the
    // volume, ...) and report them, which clears the delta.
    String delta = jsonObject(body.c_str(), "delta");
    if (delta.length() > 2) {
      Serial.printf("desired state to apply: %s\n", delta.c_str());
      publish("state/reported", delta);
    }
  } else {
    Serial.printf("%s: %s\n", topic.c_str(), body.c_str());  // a …/rejected explanation
  }
}

// ---- connection -------------------------------------------------------------------------------

void ensureWifi() {
  if (WiFi.status() == WL_CONNECTED) return;
  Serial.printf("joining %s", WIFI_SSID);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  while (WiFi.status() != WL_CONNECTED) {
    delay(500);
    Serial.print(".");
  }
  Serial.printf(" ok, %s\n", WiFi.localIP().toString().c_str());
}

void syncClock() {
  configTime(0, 0, "pool.ntp.org", "time.google.com");
  Serial.print("setting the clock");
  while (time(nullptr) < 1700000000) {  // a certificate is "not yet valid" in 1970
    delay(500);
    Serial.print(".");
  }
  Serial.println(" ok");
}

bool connectMqtt() {
  Serial.printf("connecting to %s:%u as %s\n", ROOST_MQTT_HOST, ROOST_MQTT_PORT, DEVICE_ID);
  if (!mqtt.connect(DEVICE_ID, DEVICE_ID, DEVICE_TOKEN)) {
    int state = mqtt.state();
    char tlsError[120] = "";
    net.lastError(tlsError, sizeof tlsError);
    if (state == MQTT_CONNECT_BAD_CREDENTIALS || state == MQTT_CONNECT_UNAUTHORIZED) {
      Serial.printf("refused: the token is wrong, expired or revoked (state %d)\n", state);
    } else {
      Serial.printf("failed: state %d, TLS: %s\n", state, tlsError[0] ? tlsError : "-");
    }
    return false;
  }
  Serial.println("connected");
  // A clean session: subscribe on every connect. The server then sends the commands queued
  // while the device was away and the current state delta.
  mqtt.subscribe((prefix + "/commands/+").c_str(), 1);
  mqtt.subscribe((prefix + "/state/delta").c_str(), 1);
  // Why the server refused something we sent (MQTT 3.1.1 has no negative acknowledgement).
  mqtt.subscribe((prefix + "/telemetry/rejected").c_str(), 0);
  mqtt.subscribe((prefix + "/events/rejected").c_str(), 0);
  mqtt.subscribe((prefix + "/state/rejected").c_str(), 0);
  publish("state/reported", String("{\"client\":\"") + CLIENT + "\"}");
  return true;
}

void setup() {
  Serial.begin(115200);
  prefix = String("devices/") + DEVICE_ID;
  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);
  ensureWifi();
  syncClock();
  net.setCACert(ROOST_CA_PEM);  // trust only the platform CA, and check the host name
  mqtt.setServer(ROOST_MQTT_HOST, ROOST_MQTT_PORT);
  if (!mqtt.setBufferSize(MQTT_BUFFER_BYTES)) Serial.println("no memory for the MQTT buffer");
  mqtt.setKeepAlive(KEEPALIVE_S);
  mqtt.setCallback(onMessage);
}

void loop() {
  ensureWifi();
  if (!mqtt.connected()) {
    if ((long)(millis() - nextAttemptMs) < 0) return;
    if (!connectMqtt()) {
      unsigned long wait = backoffMs / 2 + esp_random() % (backoffMs / 2 + 1);
      Serial.printf("retrying in %lu ms\n", wait);
      nextAttemptMs = millis() + wait;
      backoffMs = min(backoffMs * 2, RECONNECT_MAX_MS);
      return;
    }
    backoffMs = RECONNECT_MIN_MS;
  }
  mqtt.loop();
  if (rebootRequested) {
    mqtt.loop();  // let the answer out first
    delay(500);
    ESP.restart();
  }
  if (!bootSent) sendBootEvent();
  if (lastTelemetryMs == 0 || millis() - lastTelemetryMs >= TELEMETRY_EVERY_MS) {
    lastTelemetryMs = millis();
    sendTelemetry();
  }
}
