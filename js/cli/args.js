'use strict'
// What every command shares: the option parser, value parsers that name what was given and
// what is accepted, and the two ways of answering (stdout, or an error in the chosen format).

const util = require('node:util')

class UsageError extends Error {}

/**
 * The commands' option parser, on node:util's parseArgs (its tokens, so each refusal names
 * the option as given): `spec` maps a long option to 'flag' or 'value' ('help' also takes
 * -h); `'--': 'rest'` lets the command take a command line after `--` (options.rest), else
 * what follows `--` counts as positional. `positionals` is how many positional arguments the
 * command takes: any more, an unknown option, a flag given a value or an option missing its
 * value is a UsageError.
 * @template {Record<string, 'flag' | 'value' | 'rest'>} Spec
 * @param {string[]} argv
 * @param {Spec} spec
 * @param {number} [positionals]
 * @returns {{ _: string[], rest?: string[] } & { [Name in keyof Spec]?: Spec[Name] extends 'flag' ? boolean : string }}
 */
function parseArgs (argv, spec, positionals = 0) {
  /** @type {NonNullable<import('node:util').ParseArgsConfig['options']>} */
  const options = {}
  for (const [name, kind] of Object.entries(spec)) {
    if (name === '--') continue
    options[name] = { type: kind === 'flag' ? 'boolean' : 'string', ...(name === 'help' ? { short: 'h' } : {}) }
  }
  const { tokens } = util.parseArgs({ args: argv, options, strict: false, allowPositionals: true, tokens: true })
  /** @type {{ _: string[], rest?: string[], [name: string]: unknown }} */
  const result = { _: [] }
  for (const token of tokens) {
    if (token.kind === 'option-terminator') {
      if (spec['--'] === 'rest') {
        result.rest = argv.slice(token.index + 1)
        break
      }
      continue
    }
    if (token.kind === 'positional') {
      result._.push(token.value)
      continue
    }
    const known = Object.hasOwn(options, token.name) && (token.rawName.startsWith('--') || options[token.name].short === token.rawName.slice(1))
    if (!known) throw new UsageError(`unknown option ${token.rawName}${token.inlineValue ? ` (given ${JSON.stringify(`${token.rawName}=${token.value}`)})` : ''}; accepted: ${accepted(spec)}`)
    if (spec[token.name] === 'flag') {
      if (token.value !== undefined) throw new UsageError(`${token.rawName} takes no value (given ${JSON.stringify(token.value)})`)
      result[token.name] = true
    } else {
      // A value that looks like an option is a forgotten value (`--name --json`).
      if (token.value === undefined || (!token.inlineValue && token.value.startsWith('--'))) throw new UsageError(`${token.rawName} needs a value${token.value === undefined ? '' : ` (given ${JSON.stringify(token.value)}, which looks like an option; write ${token.rawName}=VALUE if it is the value)`}`)
      result[token.name] = token.value
    }
  }
  if (result._.length > positionals) {
    const extra = result._.slice(positionals)
    throw new UsageError(`unexpected argument${extra.length > 1 ? 's' : ''} ${extra.map((a) => JSON.stringify(a)).join(' ')} (${positionals === 0 ? 'this command takes none' : `this command takes ${positionals}`})`)
  }
  // Its fields are the spec's options, each a boolean or a string as its kind says (checked above).
  return /** @type {any} */ (result)
}

/** `--json, --help (-h), --redis VALUE` for an error message. */
function accepted (spec) {
  return Object.entries(spec)
    .filter(([name]) => name !== '--')
    .map(([name, kind]) => `--${name}${kind === 'value' ? ' VALUE' : ''}${name === 'help' ? ' (-h)' : ''}`)
    .join(', ')
}

/**
 * The addon, loaded when a command first has a value to parse: sizes, durations, rates and
 * SELF_RECYCLE_* settings have one parser, src/units.rs and the settings table, so a
 * command reads them as a worker does. `report`, and `status`/`check` without --max-age,
 * parse nothing and never load it (they read files, on any machine).
 */
function native () {
  return require('../native.js')
}

/** A value through one of the native parsers; a refusal is a UsageError naming --name. */
function parsed (parse, text, name) {
  const binding = native() // a missing binary is not a usage error: main() says what it is
  try {
    return parse(binding, String(text))
  } catch (error) {
    throw new UsageError(`--${name}=${JSON.stringify(text)}: expected ${error?.message ?? error}`)
  }
}

/** `30s`, `2m`, `500ms`, `1500` (ms), as SELF_RECYCLE_* durations: at most 2^31 - 1 ms. */
function parseDuration (text, name) {
  return parsed((binding, t) => binding.parseDuration(t), text, name)
}

/** `60%` -> 0.6 (above 0%, at most 100%). */
function parsePercent (text, name) {
  return parsed((binding, t) => binding.parsePercent(t, 100), text, name)
}

/** `5MiB/min` -> bytes per minute. */
function parseRate (text, name) {
  return parsed((binding, t) => binding.parseRate(t), text, name)
}

/**
 * SELF_RECYCLE_* settings as a worker reads them, `flags` over the environment (as options
 * over variables): `{ fleetRedis: ['--redis', value] }`. `only`: the variables read (a
 * malformed other one is not this command's business). A refusal is a UsageError naming
 * the flag, or the variable, its value (a URL without its password) and what is accepted.
 */
function settings (flags, only) {
  const { readEnv } = require('../options.js')
  const binding = native()
  /** @type {Record<string, string>} */
  const options = {}
  /** @type {Record<string, string>} */
  const flagOf = {}
  for (const [option, [flag, value]] of Object.entries(flags)) {
    if (value === undefined) continue
    options[option] = value
    flagOf[`option ${option}`] = flag
  }
  try {
    return binding.settings({ env: readEnv(process.env), options, only })
  } catch (error) {
    if (error?.code !== 'ERR_SELF_RECYCLE_CONFIG') throw error
    throw new UsageError(`${flagOf[error.variable] ?? error.variable}=${JSON.stringify(error.value)}: expected ${error.accepts}`)
  }
}

const mib = (bytes) => `${Math.round(bytes / 1048576)} MiB`
const percent = (share) => `${Math.round(share * 100)}%`

function say (text) {
  process.stdout.write(`${text}\n`)
}

function fail (options, message, code = 1) {
  if (options.json) say(JSON.stringify({ ok: false, error: message }))
  else process.stderr.write(`self-recycle: ${message}\n`)
  return code
}

module.exports = { UsageError, parseArgs, parseDuration, parsePercent, parseRate, settings, mib, percent, say, fail }
