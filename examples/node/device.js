#!/usr/bin/env node
// A Roost device in Node.js with MQTT.js (the `mqtt` package): no Roost code, only the topics.
//
// It connects with its device id as the MQTT username and its token as the password, publishes
// a `boot` event and then telemetry in the key/value form every --interval seconds (QoS 1, each
// one awaited until the server's PUBACK, which Roost sends once the message is committed),
// answers commands on devices/{id}/commands/+ and reports the state it applied when the desired
// state changes (devices/{id}/state/delta). It stops after --rounds telemetry messages, or runs
// until SIGINT/SIGTERM with --forever. The same device as examples/python/device.py.
//
// Settings come from the environment (see examples/README.md): ROOST_DEVICE_ID,
// ROOST_DEVICE_TOKEN (required); ROOST_MQTT_HOST (else the host of ROOST_URL, else 127.0.0.1);
// ROOST_MQTT_PORT (1884, the demo's, or 8883 with TLS); ROOST_CA_FILE (the platform CA in PEM:
// connect over TLS and trust only it).
//
//   npm ci --prefix examples/node && node examples/node/device.js --help
'use strict'

const crypto = require('node:crypto')
const fs = require('node:fs')
const { parseArgs } = require('node:util')
const mqtt = require('mqtt')

const CLIENT = 'node-mqttjs'
// Seconds of silence before a PINGREQ; the server drops the session after 1.5 times that.
const KEEPALIVE_S = 30
// Reconnects wait twice as long after each failure, from the first figure up to the second,
// with jitter so that a fleet cut off at once does not come back at once.
const RECONNECT_MIN_MS = 1000
const RECONNECT_MAX_MS = 60000
// Commands are delivered at least once: the answers to the last ids are kept to answer a repeat.
const REMEMBERED_COMMANDS = 100
// How long a stop waits for the acknowledgements of what is in flight.
const END_GRACE_MS = 3000
// Refusals no retry can cure: bad credentials (CONNACK 4/5, MQTT 5's 134/135), a server the CA
// does not vouch for.
const FATAL_CONNACK = new Set([4, 5, 134, 135])
const FATAL_TLS = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID'
])

const USAGE = `usage: node device.js [--rounds N] [--forever] [--interval S] [--help]

A Roost device over MQTT (MQTT.js): sends a boot event and telemetry, answers the
commands 'ping' and 'set_interval', reports the desired state it applies.

options:
  --rounds N     telemetry messages to send (5)
  --forever      run until SIGINT or SIGTERM
  --interval S   seconds between telemetry messages (5)
  -h, --help     show this help and exit

environment: ROOST_DEVICE_ID, ROOST_DEVICE_TOKEN (required), ROOST_MQTT_HOST (else
ROOST_URL's host, else 127.0.0.1), ROOST_MQTT_PORT (1884; 8883 with TLS),
ROOST_CA_FILE (PEM of the platform CA: use TLS)
`

function log (level, ...parts) {
  console.error(new Date().toISOString(), level, ...parts)
}

function readSettings (env) {
  const missing = ['ROOST_DEVICE_ID', 'ROOST_DEVICE_TOKEN'].filter((name) => !env[name])
  if (missing.length) {
    throw new Error(`set ${missing.join(' and ')} (see examples/README.md)`)
  }
  let urlHost = ''
  if (env.ROOST_URL) urlHost = new URL(env.ROOST_URL).hostname
  const caFile = env.ROOST_CA_FILE || ''
  return {
    deviceId: env.ROOST_DEVICE_ID,
    token: env.ROOST_DEVICE_TOKEN,
    caFile,
    host: env.ROOST_MQTT_HOST || urlHost || '127.0.0.1',
    port: Number(env.ROOST_MQTT_PORT || (caFile ? 8883 : 1884))
  }
}

// A number with a fractional part even when it comes out round: JSON.stringify(22.0) is "22",
// and a sensor created by an integer is a long sensor that then refuses 21.5.
function decimal (min, max, places) {
  const value = Number((min + Math.random() * (max - min)).toFixed(places))
  return Number.isInteger(value) ? value + 10 ** -places : value
}

function telemetryReading (n) {
  return {
    ts: Date.now(), // epoch milliseconds: the server tells units by magnitude
    values: {
      temperature: decimal(20, 26, 2),
      cpu_load: decimal(5, 60, 1),
      pickups: n,
      presence: Math.random() < 0.5
    }
  }
}

function bootEvent () {
  return { event: 'boot', ts: Date.now(), client: CLIENT }
}

class Device {
  constructor (settings, onFatal) {
    this.settings = settings
    this.prefix = `devices/${settings.deviceId}`
    this.onFatal = onFatal
    this.started = Date.now()
    this.intervalS = 5
    this.applied = {}
    this.deltaVersion = null
    this.answers = new Map()
    this.backoffMs = RECONNECT_MIN_MS
    this.reconnectTimer = null
    this.ending = false
    this.inflight = 0 // QoS 1 messages published and not yet acknowledged
    this.idle = null
    this.connectedOnce = new Promise((resolve) => { this.firstConnect = resolve })
  }

  // -- connection ----------------------------------------------------------------------------

  start () {
    const s = this.settings
    const tls = Boolean(s.caFile)
    const url = `${tls ? 'mqtts' : 'mqtt'}://${s.host}:${s.port}`
    log('INFO', `connecting to ${s.host}:${s.port} as ${s.deviceId}${tls ? ' (TLS)' : ''}`)
    this.client = mqtt.connect(url, {
      clientId: s.deviceId,
      username: s.deviceId,
      password: s.token,
      protocolVersion: 4, // MQTT 3.1.1
      clean: true,
      keepalive: KEEPALIVE_S,
      // We reconnect ourselves (see onClose), with backoff and jitter; and subscribe on every
      // connect, so MQTT.js need not remember subscriptions.
      reconnectPeriod: 0,
      resubscribe: false,
      // Trust only the platform CA; the server's certificate must name the host we dial.
      ...(tls ? { ca: fs.readFileSync(s.caFile), rejectUnauthorized: true } : {})
    })
    this.client.on('connect', () => this.onConnect())
    this.client.on('close', () => this.onClose())
    this.client.on('error', (err) => this.onError(err))
    this.client.on('message', (topic, payload) => this.onMessage(topic, payload))
  }

  onConnect () {
    log('INFO', 'connected')
    this.backoffMs = RECONNECT_MIN_MS
    // The session starts clean: subscribe again. The server then sends the commands queued
    // while we were away and the current state delta.
    this.client.subscribe({
      [`${this.prefix}/commands/+`]: { qos: 1 },
      [`${this.prefix}/state/delta`]: { qos: 1 },
      // Why the server refused something we sent (MQTT 3.1.1 has no negative PUBACK).
      [`${this.prefix}/telemetry/rejected`]: { qos: 0 },
      [`${this.prefix}/events/rejected`]: { qos: 0 },
      [`${this.prefix}/state/rejected`]: { qos: 0 },
      [`${this.prefix}/commands/+/response/rejected`]: { qos: 0 }
    })
    // What this device runs, in its reported state (the server merges reports field by field).
    this.send('state/reported', { client: CLIENT })
    this.firstConnect()
  }

  onClose () {
    if (this.ending || this.reconnectTimer) return
    const wait = Math.round(this.backoffMs * (0.5 + Math.random() / 2))
    log('WARNING', `disconnected; reconnecting in ${(wait / 1000).toFixed(1)} s`)
    this.backoffMs = Math.min(this.backoffMs * 2, RECONNECT_MAX_MS)
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      this.client.reconnect()
    }, wait)
  }

  onError (err) {
    const s = this.settings
    if (FATAL_CONNACK.has(err.code)) {
      this.ending = true
      this.onFatal(`the server refused the device's credentials: ${err.message}`)
    } else if (FATAL_TLS.has(err.code)) {
      this.ending = true
      this.onFatal(
        `the server at ${s.host}:${s.port} is not the one ${s.caFile} vouches for ` +
          `(${err.code}: ${err.message}); refusing to connect`
      )
    } else {
      log('WARNING', `connection error: ${err.message}`)
    }
  }

  async end () {
    this.ending = true
    clearTimeout(this.reconnectTimer)
    // Give what is in flight (a command's answer, say) a moment to be acknowledged.
    if (this.inflight > 0 && this.client.connected) {
      let timer
      await Promise.race([
        new Promise((resolve) => { this.idle = resolve }),
        new Promise((resolve) => { timer = setTimeout(resolve, END_GRACE_MS) })
      ])
      clearTimeout(timer)
    }
    // Forced when something is still unacknowledged (the server is not answering) or when
    // offline: a clean end would wait for those PUBACKs.
    await this.client.endAsync(this.inflight > 0 || !this.client.connected)
  }

  settled () {
    this.inflight -= 1
    if (this.inflight === 0 && this.idle) this.idle()
  }

  // -- up: telemetry and events ----------------------------------------------------------------

  // Publish at QoS 1; resolves on the server's PUBACK (the message is then stored). The items go
  // in the wrapped form with a message id: MQTT.js resends an unacknowledged message after a
  // reconnect, and the server stores a message id once, so it is stored exactly once.
  async publish (suffix, items) {
    const payload = JSON.stringify({ msg_id: crypto.randomUUID(), items })
    this.inflight += 1
    try {
      await this.client.publishAsync(`${this.prefix}/${suffix}`, payload, { qos: 1 })
    } finally {
      this.settled()
    }
    log('INFO', `${suffix} stored: ${JSON.stringify(items)}`)
  }

  // Publish without waiting (from message handlers: they must not hold the client up).
  send (suffix, body) {
    this.inflight += 1
    this.client.publish(`${this.prefix}/${suffix}`, JSON.stringify(body), { qos: 1 }, (err) => {
      this.settled()
      if (err) log('WARNING', `${suffix} not sent: ${err.message}`)
    })
  }

  // -- down: commands and state ----------------------------------------------------------------

  onMessage (topic, payload) {
    if (topic.endsWith('/rejected')) {
      log('ERROR', `the server refused a message: ${topic} ${payload}`)
      return
    }
    let body
    try {
      body = JSON.parse(payload.toString())
    } catch {
      log('WARNING', `not JSON on ${topic}: ${payload.toString().slice(0, 100)}`)
      return
    }
    if (topic === `${this.prefix}/state/delta`) {
      this.onDelta(body)
    } else if (topic.startsWith(`${this.prefix}/commands/`)) {
      this.onCommand(body)
    }
  }

  onCommand (command) {
    const cmdId = String(command.id)
    let answer = this.answers.get(cmdId)
    if (answer === undefined) {
      answer = this.runCommand(command.name, command.params || {})
      this.answers.set(cmdId, answer)
      while (this.answers.size > REMEMBERED_COMMANDS) {
        this.answers.delete(this.answers.keys().next().value)
      }
    }
    const call = `${command.name}(${JSON.stringify(command.params)})`
    log('INFO', `command ${cmdId} ${call} -> ${JSON.stringify(answer)}`)
    this.send(`commands/${cmdId}/response`, answer)
  }

  runCommand (name, params) {
    if (name === 'ping') {
      const uptimeS = Math.round((Date.now() - this.started) / 100) / 10
      const pong = params.echo === undefined ? true : params.echo
      return { status: 'SUCCEEDED', result: { pong, uptime_s: uptimeS, client: CLIENT } }
    }
    if (name === 'set_interval') {
      const seconds = params.seconds
      if (typeof seconds !== 'number' || seconds < 0.1 || seconds > 3600) {
        return { status: 'FAILED', result: { error: 'seconds: a number, 0.1 to 3600' } }
      }
      this.intervalS = seconds
      return { status: 'SUCCEEDED', result: { interval_s: this.intervalS } }
    }
    return { status: 'FAILED', result: { error: `unknown command '${name}'` } }
  }

  // Apply the desired fields that differ from what we reported, then report them.
  onDelta (message) {
    const delta = message.delta
    if (!delta || typeof delta !== 'object' || !Object.keys(delta).length) return
    // The server sends the current delta on connect and again on subscribing: apply it once.
    if (message.version !== undefined && message.version === this.deltaVersion) return
    this.deltaVersion = message.version
    const interval = delta.interval_s
    if (typeof interval === 'number' && interval >= 0.1 && interval <= 3600) {
      this.intervalS = interval
    }
    Object.assign(this.applied, delta) // a real device would switch its light, volume, … here
    log('INFO', `desired state v${message.version} applied: ${JSON.stringify(delta)}`)
    this.send('state/reported', delta)
  }
}

async function main () {
  let args
  try {
    ({ values: args } = parseArgs({
      options: {
        rounds: { type: 'string', default: '5' },
        forever: { type: 'boolean', default: false },
        interval: { type: 'string', default: '5' },
        help: { type: 'boolean', short: 'h', default: false }
      }
    }))
  } catch (err) {
    process.stderr.write(`error: ${err.message}\n\n${USAGE}`)
    return 2
  }
  if (args.help) {
    process.stdout.write(USAGE)
    return 0
  }
  const rounds = Number(args.rounds)
  const intervalS = Number(args.interval)
  if (!Number.isInteger(rounds) || rounds < 0 || !(intervalS > 0)) {
    process.stderr.write(`error: --rounds takes a whole number, --interval a positive one\n\n${USAGE}`)
    return 2
  }
  let settings
  try {
    settings = readSettings(process.env)
  } catch (err) {
    process.stderr.write(`error: ${err.message}\n`)
    return 2
  }

  // Everything below waits on `stopped` too, so that a signal or a fatal refusal ends it.
  let stop
  const stopped = new Promise((resolve) => { stop = resolve })
  let stopping = false
  let fatal = null
  const requestStop = (why) => {
    if (!stopping) log('INFO', `${why}: stopping`)
    stopping = true
    stop()
  }
  process.on('SIGINT', () => requestStop('SIGINT'))
  process.on('SIGTERM', () => requestStop('SIGTERM'))

  const device = new Device(settings, (reason) => {
    fatal = reason
    requestStop('refused')
  })
  device.intervalS = intervalS
  device.start()
  let sent = 0
  try {
    await Promise.race([device.connectedOnce, stopped])
    if (!stopping) await Promise.race([device.publish('events', [bootEvent()]), stopped])
    while (!stopping && (args.forever || sent < rounds)) {
      await Promise.race([device.publish('telemetry', [telemetryReading(sent + 1)]), stopped])
      if (stopping) break
      sent += 1
      if (args.forever || sent < rounds) {
        let timer
        const pause = new Promise((resolve) => { timer = setTimeout(resolve, device.intervalS * 1000) })
        await Promise.race([pause, stopped])
        clearTimeout(timer)
      }
    }
  } finally {
    await device.end()
  }
  if (fatal) {
    log('ERROR', fatal)
    return 1
  }
  log('INFO', `done: ${sent} telemetry messages stored`)
  return 0
}

main().then(
  (code) => { process.exitCode = code },
  (err) => {
    log('ERROR', err.stack || String(err))
    process.exitCode = 1
  }
)
