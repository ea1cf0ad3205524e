'use strict'
// Two checks of what the JS modules export, run by `npm test`:
//  1. every name an internal module of js/ exports (module.exports = { ... },
//     module.exports.NAME = ...) is used by another file of the repository (js/, __test__/,
//     bench/, scripts/, examples/): a name only its own module uses is not exported;
//  2. each public entry (index, nest, prometheus, otel, bullmq) exports, at run time, the
//     values its hand-written .d.ts declares, no more and no fewer.
// A use is seen through a static require()/import of the module: destructured names,
// `m.NAME` on the binding it was assigned to, or `require(...).NAME`. A binding used any
// other way (passed along, spread) counts as using every name. Exits 1 naming each
// module and export. `--root DIR` checks another tree (__test__/check-js.test.js).

const fs = require('node:fs')
const path = require('node:path')
const ts = require('typescript')

const args = process.argv.slice(2)
const root = args[0] === '--root' && args[1] ? path.resolve(args[1]) : path.join(__dirname, '..')

/**
 * The public entries: their exports are the API their hand-written .d.ts declares. The bin
 * (cli.js) is not one: the package's exports map does not expose it, so it is checked as
 * an internal module.
 */
const ENTRIES = ['index.js', 'nest.js', 'prometheus.js', 'otel.js', 'bullmq.js']
const SCANNED = ['js', '__test__', 'bench', 'scripts', 'examples']
const SOURCE = /\.(c|m)?(j|t)s$/

function filesUnder (dir) {
  let entries
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true })
  } catch {
    return []
  }
  return entries.flatMap((entry) => {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : filesUnder(full)
    return entry.isFile() && SOURCE.test(entry.name) && !entry.name.endsWith('.d.ts') ? [full] : []
  })
}

function parse (file) {
  return ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true)
}

const isModuleExports = (node) => ts.isPropertyAccessExpression(node) && ts.isIdentifier(node.expression) &&
  node.expression.text === 'module' && node.name.text === 'exports'

const nameOf = (name) => ts.isIdentifier(name) || ts.isStringLiteral(name) || ts.isPrivateIdentifier(name) ? name.text : null

/** The names `file` exports, or null when module.exports is not an object of names. */
function exportsOf (file) {
  const names = new Set()
  let literal = false
  let other = false
  const visit = (node) => {
    if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.EqualsToken) {
      const target = node.left
      if (isModuleExports(target)) {
        let value = node.right
        while (ts.isParenthesizedExpression(value) || ts.isSatisfiesExpression(value) || ts.isAsExpression(value)) value = value.expression
        if (ts.isObjectLiteralExpression(value)) {
          literal = true
          for (const property of value.properties) {
            const name = property.name && nameOf(property.name)
            if (name !== null && name !== undefined) names.add(name)
          }
        } else {
          other = true
        }
      } else if (ts.isPropertyAccessExpression(target) && (isModuleExports(target.expression) ||
          (ts.isIdentifier(target.expression) && target.expression.text === 'exports'))) {
        // `module.exports.default = module.exports` is the entry itself again, not a name.
        if (!isModuleExports(node.right)) names.add(target.name.text)
      }
    }
    ts.forEachChild(node, visit)
  }
  visit(parse(file))
  return other && !literal ? null : names
}

/** The file a relative specifier names (`./x`, `./x.js`, a directory's index.js), or null. */
function resolveSpecifier (from, specifier) {
  if (!specifier.startsWith('.')) return null
  const base = path.resolve(path.dirname(from), specifier)
  for (const candidate of [base, `${base}.js`, path.join(base, 'index.js')]) {
    try {
      if (fs.statSync(candidate).isFile()) return candidate
    } catch {}
  }
  return null
}

/**
 * What `file` uses of each module it requires or imports: Map<module file, Set<name> | '*'>
 * ('*': every name, the module object escaped).
 */
function usesIn (file) {
  const source = parse(file)
  const uses = new Map()
  const add = (module, name) => {
    const set = uses.get(module) ?? new Set()
    if (set !== '*') {
      if (name === '*') uses.set(module, '*')
      else uses.set(module, set.add(name))
    }
  }
  // Bindings holding a module object: identifier -> module file.
  const bindings = new Map()
  const bind = (nameNode, module) => {
    if (ts.isIdentifier(nameNode)) {
      bindings.set(nameNode.text, module)
    } else if (ts.isObjectBindingPattern(nameNode)) {
      for (const element of nameNode.elements) {
        if (element.dotDotDotToken) return add(module, '*')
        const name = nameOf(element.propertyName ?? element.name)
        add(module, name ?? '*')
      }
    } else {
      add(module, '*')
    }
  }
  const visitRequires = (node) => {
    if (ts.isCallExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === 'require' &&
        node.arguments.length === 1 && ts.isStringLiteralLike(node.arguments[0])) {
      const module = resolveSpecifier(file, node.arguments[0].text)
      if (module) {
        const parent = node.parent
        if (ts.isVariableDeclaration(parent) && parent.initializer === node) bind(parent.name, module)
        else if (ts.isPropertyAccessExpression(parent) && parent.expression === node) add(module, parent.name.text)
        else if (ts.isBinaryExpression(parent) && parent.right === node && ts.isIdentifier(parent.left)) bindings.set(parent.left.text, module)
        else if (!ts.isExpressionStatement(parent)) add(module, '*')
      }
    } else if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      const module = resolveSpecifier(file, node.moduleSpecifier.text)
      const clause = node.importClause
      if (module && clause) {
        if (clause.name) bindings.set(clause.name.text, module)
        const named = clause.namedBindings
        if (named && ts.isNamespaceImport(named)) bindings.set(named.name.text, module)
        else if (named) for (const element of named.elements) add(module, (element.propertyName ?? element.name).text)
      }
    }
    ts.forEachChild(node, visitRequires)
  }
  visitRequires(source)
  if (bindings.size > 0) {
    const visitBindings = (node) => {
      if (ts.isIdentifier(node) && bindings.has(node.text)) {
        const module = bindings.get(node.text)
        const parent = node.parent
        const declaration = (ts.isVariableDeclaration(parent) || ts.isImportClause(parent) || ts.isNamespaceImport(parent)) && parent.name === node
        const assigned = ts.isBinaryExpression(parent) && parent.left === node
        if (ts.isPropertyAccessExpression(parent) && parent.expression === node) add(module, parent.name.text)
        else if (ts.isElementAccessExpression(parent) && parent.expression === node && ts.isStringLiteralLike(parent.argumentExpression)) add(module, parent.argumentExpression.text)
        else if (!declaration && !assigned && !(ts.isPropertyAccessExpression(parent) && parent.name === node)) add(module, '*')
      }
      ts.forEachChild(node, visitBindings)
    }
    visitBindings(source)
  }
  return uses
}

/** Names a .d.ts exports as values (what exists at run time). */
function declaredValues (file) {
  const names = new Set()
  const exported = (node) => ts.getCombinedModifierFlags(node) & ts.ModifierFlags.Export
  for (const statement of parse(file).statements) {
    if (ts.isExportAssignment(statement)) names.add('default')
    if (!exported(statement)) continue
    if (ts.isFunctionDeclaration(statement) || ts.isClassDeclaration(statement) || ts.isEnumDeclaration(statement)) {
      names.add(statement.name ? statement.name.text : 'default')
    } else if (ts.isVariableStatement(statement)) {
      for (const declaration of statement.declarationList.declarations) if (ts.isIdentifier(declaration.name)) names.add(declaration.name.text)
    }
  }
  return names
}

function main () {
  const jsDir = path.join(root, 'js')
  const modules = [...filesUnder(jsDir)].filter((file) => file.endsWith('.js'))
  const internal = modules.filter((file) => !(path.dirname(file) === jsDir && ENTRIES.includes(path.basename(file))))
  const uses = new Map() // module -> Set<name> | '*'
  for (const file of SCANNED.flatMap((dir) => filesUnder(path.join(root, dir)))) {
    for (const [module, names] of usesIn(file)) {
      if (module === file) continue // a module's use of itself does not count
      const seen = uses.get(module) ?? new Set()
      if (seen === '*') continue
      uses.set(module, names === '*' ? '*' : new Set([...seen, ...names]))
    }
  }
  const problems = []
  const notes = []
  for (const module of internal) {
    const names = exportsOf(module)
    const relative = path.relative(root, module)
    if (names === null) {
      notes.push(`${relative}: exports a single value, not names (not checked)`)
      continue
    }
    const used = uses.get(module)
    if (used === '*') continue
    for (const name of names) {
      if (!used?.has(name)) problems.push(`${relative}: '${name}' is exported but no other file uses it (delete the export, or the code if it is dead)`)
    }
  }
  for (const entry of ENTRIES) {
    const file = path.join(jsDir, entry)
    const types = file.replace(/\.js$/, '.d.ts')
    if (!fs.existsSync(file) || !fs.existsSync(types)) continue
    const js = exportsOf(file) ?? new Set()
    if (entry === 'index.js') js.add('default') // module.exports.default = module.exports
    const declared = declaredValues(types)
    for (const name of js) if (!declared.has(name)) problems.push(`js/${entry}: '${name}' is exported but js/${path.basename(types)} does not declare it`)
    for (const name of declared) if (!js.has(name)) problems.push(`js/${path.basename(types)}: '${name}' is declared but js/${entry} does not export it`)
  }
  for (const note of notes) process.stdout.write(`unused-exports: ${note}\n`)
  if (problems.length > 0) {
    process.stderr.write(`${problems.join('\n')}\nunused-exports: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n`)
    process.exit(1)
  }
  process.stdout.write(`unused-exports: every export of ${internal.length} internal modules is used; the ${ENTRIES.length} public entries match their .d.ts\n`)
}

main()
