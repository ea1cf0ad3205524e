'use strict'
// Options and SELF_RECYCLE_* variables in, as the native settings parser takes them
// (strings), and the errors that name what was wrong: the `fleet` option split into its
// Redis client (kept in JS) and FLEET_* settings; cluster workers' private stagger queue.

const ENV_PREFIX = 'SELF_RECYCLE_'

/** Thrown for a malformed env var or option; `code` is stable. */
class SelfRecycleConfigError extends Error {
  // `check`: the error the native parser threw (message, variable, value, accepts).
  constructor (check) {
    super(check.message)
    this.name = 'SelfRecycleConfigError'
    /** @type {'ERR_SELF_RECYCLE_CONFIG'} */
    this.code = 'ERR_SELF_RECYCLE_CONFIG'
    this.variable = check.variable
    this.value = check.value
    this.accepts = check.accepts
  }
}

/** A thrown value as text, whatever it is (`Object.create(null)` has no string form). */
function describeError (error) {
  try {
    if (error instanceof Error) return error.message || error.name
    if (typeof error === 'string') return error
    const text = JSON.stringify(error)
    if (text !== undefined) return text
  } catch {}
  try {
    return String(error)
  } catch {
    return Object.prototype.toString.call(error)
  }
}

/** `SELF_RECYCLE_*` variables, without the prefix (`SELF_RECYCLE_TEST_*` belong to the tests). */
function readEnv (env) {
  /** @type {Record<string, string>} */
  const found = {}
  for (const [name, value] of Object.entries(env)) {
    // TEST_ variables steer tests; GENERATION is set by a RESTART=exec re-execution.
    if (name.startsWith(ENV_PREFIX) && !name.startsWith(`${ENV_PREFIX}TEST_`) && name !== `${ENV_PREFIX}GENERATION` && typeof value === 'string') {
      found[name.slice(ENV_PREFIX.length)] = value
    }
  }
  return found
}

function optionError (message, variable, value, accepts) {
  return new SelfRecycleConfigError({ message, variable, value, accepts })
}

/** Options as strings for the native parser: numbers are bytes or ms, booleans on/off. */
function normalizeOptions (options) {
  if (options === undefined || options === null) return {}
  const kind = Array.isArray(options) ? 'an array' : options instanceof Map ? 'a Map' : typeof options
  if (typeof options !== 'object' || Array.isArray(options) || options instanceof Map) {
    throw optionError(`options must be a plain object, got ${kind}`, 'options', String(options), 'an object of options')
  }
  const symbols = Object.getOwnPropertySymbols(options)
  if (symbols.length > 0) {
    throw optionError(`options must not have symbol keys, got ${String(symbols[0])}`, 'options', String(symbols[0]), 'string keys such as maxRss')
  }
  const normalized = {}
  for (const name of Object.keys(options)) {
    const value = options[name]
    if (name === '__proto__') {
      throw optionError('option __proto__ is not an option', 'option __proto__', String(value), 'a known option')
    }
    if (value === undefined) continue
    if (typeof value === 'string') normalized[name] = value
    else if (typeof value === 'number') normalized[name] = String(value)
    else if (typeof value === 'boolean') normalized[name] = value ? 'on' : 'off'
    else if (value === null) normalized[name] = 'off'
    else {
      throw optionError(`option ${name}=${typeof value} is not valid: expected a string, a number or a boolean`, `option ${name}`, describeError(value), 'a string, a number or a boolean')
    }
  }
  return normalized
}

// The `fleet` option's fields and the settings they become (FLEET_* in the native table).
const FLEET_FIELDS = Object.freeze({
  name: 'fleetName',
  maxConcurrent: 'fleetMaxConcurrent',
  gap: 'fleetGap',
  leaseTtl: 'fleetLeaseTtl',
  timeout: 'fleetTimeout',
  heartbeat: 'fleetHeartbeat',
  storm: 'fleetStorm',
  stormGap: 'fleetStormGap',
  host: 'fleetHost'
})

// Every field that becomes a setting, `redis` as a URL (FLEET_REDIS) included.
const FLEET_SETTINGS = Object.freeze({ redis: 'fleetRedis', ...FLEET_FIELDS })

const FLEET_REDIS_ACCEPTS = 'an ioredis client (the one the app uses), a redis:// URL, ioredis options, or a function or promise of a client'

/**
 * Splits the `fleet` option off: its Redis client stays in JS, its other fields become
 * FLEET_* settings for the native parser (a URL too: `fleet.redis` as a string is the
 * FLEET_REDIS setting, checked there). `fleet`: the option (`false`: no fleet even if
 * SELF_RECYCLE_FLEET_REDIS is set), or undefined.
 */
function splitFleet (options) {
  if (options === null || typeof options !== 'object' || Array.isArray(options) || !('fleet' in options)) return { options, fleet: undefined }
  const { fleet, ...rest } = options
  if (fleet === undefined) return { options: rest, fleet: undefined }
  if (fleet === false || fleet === null) return { options: rest, fleet: false }
  const accepts = `an object { redis, ${Object.keys(FLEET_FIELDS).join(', ')} }, or false`
  if (typeof fleet !== 'object' || Array.isArray(fleet)) {
    throw optionError(`option fleet=${String(fleet)} is not valid: expected ${accepts}`, 'option fleet', String(fleet), accepts)
  }
  for (const key of Object.keys(fleet)) {
    if (key === 'redis' || fleet[key] === undefined) continue
    const field = FLEET_FIELDS[key]
    if (!field) throw optionError(`option fleet.${key} is not a fleet option: expected one of redis, ${Object.keys(FLEET_FIELDS).join(', ')}`, `option fleet.${key}`, String(fleet[key]), accepts)
    const value = fleet[key]
    rest[field] = key === 'storm' && value !== null && typeof value === 'object' ? `${value.recycles}/${value.window}` : value
  }
  const redis = fleet.redis
  if (typeof redis === 'string') rest.fleetRedis = redis
  else if (!(redis === undefined || redis === null || typeof redis === 'function' || (typeof redis === 'object' && !Array.isArray(redis)))) {
    throw optionError(`option fleet.redis=${String(redis)} is not valid: expected ${FLEET_REDIS_ACCEPTS}`, 'option fleet.redis', String(redis), FLEET_REDIS_ACCEPTS)
  }
  return { options: rest, fleet }
}

/**
 * The settings JS acts on (the fleet's Redis, which variables are given), parsed by the
 * native settings table: the one parser of options and SELF_RECYCLE_* variables. Throws its
 * SelfRecycleConfigError, named as the user wrote it (`option fleet.gap`: `fleet` is the
 * option as given). `only`: read just these variables (a malformed other one is then no
 * error; null: all).
 */
function readSettings (normalized, only, fleet) {
  const binding = require('./native.js')
  try {
    return binding.settings({ env: readEnv(process.env), options: normalized, ...(only ? { only } : {}) })
  } catch (error) {
    if (error?.code === 'ERR_SELF_RECYCLE_CONFIG') throw fleetOptionName(new SelfRecycleConfigError(error), fleet)
    throw error
  }
}

/**
 * The fleet's Redis (a client, options, a function or promise of a client, or the URL in
 * force: never shown), or null for no fleet. `fleet`: splitFleet's; `settings`: readSettings'.
 */
function fleetRedis (fleet, settings) {
  if (fleet === false) return null
  const client = fleet?.redis
  if (client !== undefined && client !== null && typeof client !== 'string') return client
  if ((settings.fleetRedis ?? null) !== null) return settings.fleetRedis
  if (fleet === undefined) return null
  throw optionError(`option fleet.redis is missing: expected ${FLEET_REDIS_ACCEPTS}`, 'option fleet.redis', String(client), FLEET_REDIS_ACCEPTS)
}

/**
 * Native errors name `option fleetGap`; the user wrote `fleet.gap` (`fleet`: the option as
 * given; a top-level `fleetGap` keeps its name).
 */
function fleetOptionName (error, fleet) {
  const match = /^option fleet([A-Z]\w*)$/.exec(error?.variable ?? '')
  if (!match || fleet === null || typeof fleet !== 'object') return error
  const key = Object.keys(FLEET_SETTINGS).find((k) => FLEET_SETTINGS[k] === `fleet${match[1]}`)
  if (!key || fleet[key] === undefined) return error
  const renamed = `option fleet.${key}`
  error.message = error.message.split(error.variable).join(renamed)
  error.variable = renamed
  return error
}

/**
 * Siblings of a node:cluster primary (PM2 cluster mode included) never drain at the same
 * time: without a STAGGER_DIR of their own they queue in a private directory per primary,
 * with no gap unless STAGGER_GAP says otherwise. `given`: the variables in force
 * (readSettings': an option, or a non-blank variable).
 */
function clusterStagger (options, given) {
  // Node deletes NODE_UNIQUE_ID from a worker's env while it boots; node:cluster is loaded
  // by then (free to require), and only a process with an IPC channel can be a worker.
  if (typeof process.send !== 'function' || !/** @type {import('node:cluster').Cluster} */ (/** @type {unknown} */ (require('node:cluster'))).isWorker) return options
  if (given.includes('STAGGER_DIR')) return options
  const os = require('node:os')
  const path = require('node:path')
  return {
    ...options,
    staggerDir: path.join(os.tmpdir(), `self-recycle-${process.getuid?.() ?? 'user'}-cluster-${process.ppid}`),
    ...(given.includes('STAGGER_GAP') ? {} : { staggerGap: '0' })
  }
}

module.exports = { FLEET_SETTINGS, SelfRecycleConfigError, describeError, readEnv, normalizeOptions, splitFleet, readSettings, fleetRedis, fleetOptionName, clusterStagger }
