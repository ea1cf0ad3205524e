'use strict'
// Fenced code blocks of README.md and docs/*.md, for the tests that run them. A block is
// marked by the words after its language: `runnable` (a complete program the docs test runs,
// with `events=a,b`, `expect=TEXT` and, for Nest, `queue=NAME`) or `recipe=NAME` (a process
// manager's configuration the manager tests run).

const fs = require('node:fs')
const path = require('node:path')
const { builtinModules } = require('node:module')

const ROOT = path.join(__dirname, '..')

/** README.md and every docs/*.md, as paths relative to the repository. */
function docFiles () {
  const docs = fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort()
  return ['README.md', ...docs.map((f) => `docs/${f}`)]
}

/**
 * Every fenced block of `file`: { file, line, lang, words, attrs, text }. `words` are the
 * bare words after the language (`runnable`), `attrs` the key=value ones (repeatable keys
 * keep the last value; `events` and `expect` are split on commas).
 */
function blocksOf (file) {
  const lines = fs.readFileSync(path.join(ROOT, file), 'utf8').split('\n')
  const blocks = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)\s*(.*)$/.exec(lines[i])
    if (!open) continue
    const end = lines.findIndex((l, j) => j > i && l.startsWith('```'))
    if (end < 0) throw new Error(`${file}:${i + 1}: a fenced block that never closes`)
    const words = []
    const attrs = {}
    for (const token of open[2].split(/\s+/).filter(Boolean)) {
      const eq = token.indexOf('=')
      if (eq < 0) words.push(token)
      else attrs[token.slice(0, eq)] = token.slice(eq + 1)
    }
    blocks.push({ file, line: i + 1, lang: open[1], words, attrs, text: lines.slice(i + 1, end).join('\n') + '\n' })
    i = end
  }
  return blocks
}

/** The one block of `file` marked `recipe=name`; throws when there is not exactly one. */
function recipe (file, name) {
  const found = blocksOf(file).filter((b) => b.attrs.recipe === name)
  if (found.length !== 1) throw new Error(`${file}: expected one block marked recipe=${name}, found ${found.length}`)
  return found[0]
}

/**
 * The packages the install line before a block names: the `npm i` / `npm install` lines of
 * the nearest ```sh block above it with no other block in between; null when there is none.
 */
function installedBefore (block) {
  const blocks = blocksOf(block.file)
  const index = blocks.findIndex((b) => b.line === block.line)
  const previous = blocks[index - 1]
  if (!previous || previous.lang !== 'sh') return null
  const packages = []
  for (const line of previous.text.split('\n')) {
    const command = /^\s*npm\s+(?:i|install)\s+([^#]*)/.exec(line)
    if (command) packages.push(...command[1].split(/\s+/).filter((t) => t && !t.startsWith('-')))
  }
  return packages.length ? packages : null
}

/** The bare packages a JS/TS snippet imports (`self-recycle/nest` -> `self-recycle`). */
function importedPackages (text) {
  const specifiers = [
    ...text.matchAll(/\brequire\(\s*['"]([^'"]+)['"]\s*\)/g),
    ...text.matchAll(/^\s*import\s+(?:[^'"]*?\s+from\s+)?['"]([^'"]+)['"]/gm)
  ].map((m) => m[1])
  const bare = specifiers.filter((s) => !s.startsWith('.') && !s.startsWith('/') && !s.startsWith('node:') && !builtinModules.includes(s.split('/')[0]))
  return [...new Set(bare.map((s) => s.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]))].sort()
}

/** GitHub's anchor for a heading's text. */
function slug (heading) {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
}

/** Anchors of a markdown file's headings (outside fenced blocks). */
function anchorsOf (file) {
  const anchors = new Set()
  let fenced = false
  for (const line of fs.readFileSync(path.join(ROOT, file), 'utf8').split('\n')) {
    if (line.startsWith('```')) fenced = !fenced
    const heading = !fenced && /^#{1,6}\s+(.*)$/.exec(line)
    if (heading) anchors.add(slug(heading[1]))
  }
  return anchors
}

module.exports = { ROOT, docFiles, blocksOf, recipe, installedBefore, importedPackages, anchorsOf, slug }
