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

// The same rules as the SELF_RECYCLE_* durations (WARMUP, MAX_AGE...; src/units.rs): a bare
// number is ms, and at most 2^31 - 1 ms (a longer timer fires at once).
const UNITS = { ms: 1, s: 1000, m: 60000, min: 60000, h: 3600000, d: 86400000 }
const MAX_DURATION_MS = 2 ** 31 - 1
function parseDuration (text, name) {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?$/i.exec(String(text).trim())
  const ms = match ? Math.round(Number(match[1]) * UNITS[(match[2] ?? 'ms').toLowerCase()]) : null
  if (ms === null || ms > MAX_DURATION_MS) throw new UsageError(`--${name}=${JSON.stringify(text)}: expected a duration such as 30s, 2m, 500ms, 1h or 1d, of at most 24d (${MAX_DURATION_MS} ms)`)
  return ms
}

function parsePercent (text, name) {
  const match = /^(\d+(?:\.\d+)?)%$/.exec(String(text).trim())
  if (!match || Number(match[1]) <= 0 || Number(match[1]) > 100) throw new UsageError(`--${name}=${JSON.stringify(text)}: expected a percentage above 0% and at most 100%, such as 60%`)
  return Number(match[1]) / 100
}

const SIZE_UNITS = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1048576, gib: 1073741824 }
/** `5MiB/min` -> bytes per minute. */
function parseRate (text, name) {
  const match = /^(\d+(?:\.\d+)?)\s*([kmg]i?b|b)\/(s|min|m|h)$/i.exec(String(text).trim())
  if (!match) throw new UsageError(`--${name}=${JSON.stringify(text)}: expected a rate such as 5MiB/min, 100KiB/s or 1GB/h`)
  const perMinute = { s: 60, min: 1, m: 1, h: 1 / 60 }[match[3].toLowerCase()]
  return Number(match[1]) * SIZE_UNITS[match[2].toLowerCase()] * perMinute
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

module.exports = { UsageError, parseArgs, parseDuration, parsePercent, parseRate, mib, percent, say, fail }
