'use strict'
// Where a compiled position came from: node:module's source map cache, the one Node fills
// for `--enable-source-maps` or `process.setSourceMapsEnabled(true)` and maps Error.stack
// with (the guard's `reinit` call sites come out mapped through it). Nothing is parsed here:
// a script loaded without source maps on has no map, and its position stays as it is.

const path = require('node:path')
const { pathToFileURL, fileURLToPath } = require('node:url')

let findSourceMap
try {
  findSourceMap = require('node:module').findSourceMap
} catch {}

/**
 * The original `{ url, line, column }` (1-based; `url` a path or file URL) of a position in
 * the script at `url` (a path or URL, as V8 names it), or null: no map, or no mapping on
 * that line. Never throws.
 */
function originalPosition (url, line, column) {
  if (typeof findSourceMap !== 'function' || !url || line < 1) return null
  try {
    const map = findSourceMap(url)
    if (!map || typeof map.findEntry !== 'function') return null
    // findEntry gives the nearest mapping at or before the position, which may be on an
    // earlier line when the position comes before the line's first mapping: then the
    // line's last mapping stands for it.
    let entry = map.findEntry(line - 1, Math.max(0, column - 1))
    if (entry?.generatedLine !== line - 1) entry = map.findEntry(line - 1, 2 ** 30)
    if (entry?.generatedLine !== line - 1 || typeof entry.originalSource !== 'string') return null
    return { url: absolute(entry.originalSource, url), line: entry.originalLine + 1, column: entry.originalColumn + 1 }
  } catch {
    return null
  }
}

/** A map's source as a path or file URL: relative sources are the generated file's siblings. */
function absolute (source, generatedUrl) {
  if (/^[a-z][a-z0-9+.-]*:/i.test(source) || path.isAbsolute(source)) return source
  const generated = generatedUrl.startsWith('file:') ? fileURLToPath(generatedUrl) : generatedUrl
  return pathToFileURL(path.resolve(path.dirname(generated), source)).href
}

module.exports = { originalPosition }
