'use strict'
// How self-recycle's own modules reach the running recycler and the parts of it that are
// not public API, in one place. The recycler is one per process, shared by every copy of
// the package (a symlinked install, two versions in node_modules) through a global
// symbol; so are its internals, under a second symbol on the recycler itself.

const RECYCLER = Symbol.for('self-recycle.recycler')
const INTERNALS = Symbol.for('self-recycle.internals')

/** The process's recycler (running or not), or undefined before the first start(). */
function current () {
  return globalThis[RECYCLER]
}

/** Makes `recycler` the process's recycler. */
function adopt (recycler) {
  Object.defineProperty(globalThis, RECYCLER, { value: recycler, configurable: true, writable: true })
}

/**
 * What self-recycle's modules may call on a recycler beyond its public API:
 * `emitEvent(event)` (an event built natively elsewhere: the fleet's, the guard's),
 * `observeEvents(fn)` and `onExitFlush(fn)` (metrics entries; each returns a remover),
 * `serves(server)` (an HTTP server drained here; returns a remover),
 * `mayStopListening()` and `handOff(server)` (its socket kept for the next generation,
 * by the recycler's own addon; returns why not, or null). Undefined for something that
 * is not a recycler (or one from an older copy of the package).
 */
function internalsOf (recycler) {
  return recycler?.[INTERNALS]
}

module.exports = { current, adopt, internalsOf, INTERNALS }
