'use strict'
// One list of events and one of settings: what Rust has (the `Event` enum's names, the
// settings table) is what JS accepts and emits, what the types declare and what the docs
// list, both ways. Each extractor takes the text it reads, so the last tests can show every
// check failing on a copy with one name removed or added.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')

const ROOT = path.join(__dirname, '..')
const read = (...parts) => fs.readFileSync(path.join(ROOT, ...parts), 'utf8')
const binding = require('../js/native.js')
const { EVENTS } = require('..')
const { FLEET_SETTINGS } = require('../js/options.js')

/** The block of `text` from `start` to the first line equal to `end`. */
function block (text, start, end) {
  const from = text.indexOf(start)
  assert.ok(from >= 0, `no ${JSON.stringify(start)}`)
  const rest = text.slice(from + start.length)
  return rest.slice(0, rest.indexOf(end))
}

/**
 * The names `Event::name()` returns (src/event.rs), one per arm. Read from the source: a
 * name list in Rust would be a second owner of the names beside the enum's match, which
 * the compiler keeps exhaustive.
 */
function rustEvents (source) {
  const body = block(source, 'pub fn name(&self) -> &\'static str {', '\n    }\n')
  const arms = [...body.matchAll(/^\s*Event::\w+\b[^\n]*=> "([a-z-]+)",$/gm)].map((m) => m[1])
  assert.ok(arms.length > 10, `parsed ${arms.length} arms of Event::name`)
  return unique(arms)
}

/** The keys of `export interface EventMap` in js/index.d.ts. */
function typedEvents (dts) {
  return [...block(dts, 'export interface EventMap {', '\n}\n').matchAll(/^ {2}([a-z-]+): /gm)].map((m) => m[1])
}

/** The first cell of each row of the first table under `## heading` (or in the file). */
function rows (markdown, heading) {
  const section = heading ? block(markdown, `\n## ${heading}\n`, '\n## ') : markdown
  const lines = section.split('\n')
  const start = lines.findIndex((line) => line.startsWith('|'))
  const end = lines.findIndex((line, i) => i > start && !line.startsWith('|'))
  const table = lines.slice(start, end === -1 ? undefined : end).join('\n')
  return [...table.matchAll(/^\| `([A-Za-z_-]+)` \|/gm)].map((m) => m[1])
}

/** Option names `export interface Options` declares, `fleet`'s fields as the settings they become. */
function typedOptions (dts) {
  const options = [...block(dts, 'export interface Options {', '\n}\n').matchAll(/^ {2}(\w+)\?: /gm)].map((m) => m[1])
  const fleet = [...block(dts, 'export interface FleetOptions {', '\n}\n').matchAll(/^ {2}(\w+)\?: /gm)].map((m) => m[1])
  return [...options.filter((o) => o !== 'fleet'), ...fleet.map((f) => `fleet${f[0].toUpperCase()}${f.slice(1)}`)]
}

function unique (names) {
  return [...new Set(names)]
}

/** What one list has that the other lacks, by name; empty both ways when they agree. */
function differences (rust, other) {
  return {
    missing: rust.filter((name) => !other.includes(name)).sort(),
    extra: other.filter((name) => !rust.includes(name)).sort(),
    duplicated: other.filter((name, i) => other.indexOf(name) !== i).sort()
  }
}

const AGREE = { missing: [], extra: [], duplicated: [] }

const sources = () => ({
  event: read('src', 'event.rs'),
  dts: read('js', 'index.d.ts'),
  events: read('docs', 'events.md'),
  configuration: read('docs', 'configuration.md')
})

function eventChecks ({ event, dts, events }, jsEvents = Object.values(EVENTS)) {
  const rust = rustEvents(event)
  return {
    'EVENTS (js/index.js)': differences(rust, jsEvents),
    'EventMap (js/index.d.ts)': differences(rust, typedEvents(dts)),
    'rows of docs/events.md': differences(rust, rows(events))
  }
}

function settingChecks ({ dts, configuration }, fleetSettings = FLEET_SETTINGS) {
  const table = binding.settingNames()
  const variables = table.map((s) => s.variable)
  const options = table.map((s) => s.option)
  return {
    'rows of docs/configuration.md': differences(variables, rows(configuration, 'Settings')),
    'Options (js/index.d.ts)': differences(options, typedOptions(dts)),
    // The `fleet` option's fields (js/options.js) are the table's fleet* settings.
    'fleet fields (js/options.js)': differences(options.filter((o) => /^fleet[A-Z]/.test(o)), Object.values(fleetSettings))
  }
}

test('every event Rust emits is in EVENTS, the types and docs/events.md, and nothing else is', () => {
  const checks = eventChecks(sources())
  for (const [what, found] of Object.entries(checks)) assert.deepEqual(found, AGREE, what)
  assert.ok(rustEvents(sources().event).includes('recycle'))
})

test('every setting of the native table is an option JS takes, typed, and a row in docs/configuration.md, and nothing else is', () => {
  const table = binding.settingNames()
  assert.ok(table.length > 30, `${table.length} settings`)
  assert.deepEqual(table.find((s) => s.variable === 'MAX_RSS'), { variable: 'MAX_RSS', option: 'maxRss' })
  for (const [what, found] of Object.entries(settingChecks(sources()))) assert.deepEqual(found, AGREE, what)
})

test('each check fails when one side loses or gains a name', () => {
  const real = sources()
  const failing = (checks, what) => assert.notDeepEqual(checks[what], AGREE, `${what} did not notice`)
  // An event Rust emits that a list lacks, and one a list has that Rust never emits.
  failing(eventChecks(real, Object.values(EVENTS).filter((e) => e !== 'leak')), 'EVENTS (js/index.js)')
  failing(eventChecks(real, [...Object.values(EVENTS), 'leaks']), 'EVENTS (js/index.js)')
  failing(eventChecks({ ...real, dts: real.dts.replace(/^ {2}storm: StormEvent\n/m, '') }), 'EventMap (js/index.d.ts)')
  failing(eventChecks({ ...real, dts: real.dts.replace(/^ {2}reinit: ReinitEvent\n/m, '$&  rejuvenate: ReinitEvent\n') }), 'EventMap (js/index.d.ts)')
  failing(eventChecks({ ...real, events: real.events.replace(/^\| `queued` \|.*\n/m, '') }), 'rows of docs/events.md')
  failing(eventChecks({ ...real, events: real.events.replace(/^\| `queued` \|.*\n/m, '$&$&') }), 'rows of docs/events.md')
  // Rust gains an event (a new arm of Event::name) that no list has yet.
  const gained = real.event.replace(/^(\s*)Event::Start\(_\) => "start",$/m, '$&$1Event::Retire(_) => "retire",')
  assert.notEqual(gained, real.event)
  for (const what of Object.keys(eventChecks(real))) failing(eventChecks({ ...real, event: gained }), what)

  failing(settingChecks({ ...real, configuration: real.configuration.replace(/^\| `JITTER` \|.*\n/m, '') }), 'rows of docs/configuration.md')
  failing(settingChecks({ ...real, configuration: real.configuration.replace(/^\| `JITTER` \|.*\n/m, '$&| `JITTERS` | x | y |\n') }), 'rows of docs/configuration.md')
  failing(settingChecks({ ...real, dts: real.dts.replace(/^ {2}strikes\?: .*\n/m, '') }), 'Options (js/index.d.ts)')
  failing(settingChecks({ ...real, dts: real.dts.replace(/^ {2}strikes\?: .*\n/m, '$&  strikeCount?: number\n') }), 'Options (js/index.d.ts)')
  failing(settingChecks({ ...real, dts: real.dts.replace(/^ {2}stormGap\?: .*\n/m, '') }), 'Options (js/index.d.ts)')
  const { gap, ...withoutGap } = FLEET_SETTINGS
  assert.equal(gap, 'fleetGap')
  failing(settingChecks(real, withoutGap), 'fleet fields (js/options.js)')
  failing(settingChecks(real, { ...FLEET_SETTINGS, color: 'fleetColor' }), 'fleet fields (js/options.js)')
})
