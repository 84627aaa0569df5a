// Validates every Linear request body in a directory (one JSON file each: {query, variables})
// against Linear's published schema: the document with graphql-js's validate(), the variables with
// getVariableValues() (their JSON must fit the declared variable types, e.g. IssueFilter).
// Usage: node validate.mjs <documents-dir>. Exits 1 on any error, naming the file.
import { readFileSync, readdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { buildSchema, parse, validate, getVariableValues, Kind } from "graphql";

const here = dirname(fileURLToPath(import.meta.url));
const schema = buildSchema(readFileSync(join(here, "schema.graphql"), "utf8"));
const dir = process.argv[2];
const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
if (files.length === 0) {
  console.error(`contract-linear: no documents in ${dir}`);
  process.exit(1);
}
let failures = 0;
const queries = new Set();
for (const file of files) {
  const body = JSON.parse(readFileSync(join(dir, file), "utf8"));
  const problems = [];
  let doc;
  try {
    doc = parse(body.query);
  } catch (e) {
    problems.push(`does not parse: ${e.message}`);
  }
  if (doc) {
    queries.add(body.query);
    for (const e of validate(schema, doc)) problems.push(e.message);
    const ops = doc.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
    if (ops.length !== 1) problems.push(`${ops.length} operations (one expected)`);
    for (const op of ops) {
      const coerced = getVariableValues(schema, op.variableDefinitions ?? [], body.variables ?? {});
      for (const e of coerced.errors ?? []) problems.push(`variables: ${e.message}`);
    }
  }
  if (problems.length) {
    failures += 1;
    for (const p of problems) console.error(`contract-linear: ${file}: ${p}`);
  }
}
if (failures) {
  console.error(`contract-linear: FAILED: ${failures} of ${files.length} requests do not fit Linear's schema`);
  process.exit(1);
}
console.log(`contract-linear: ${files.length} requests (${queries.size} documents) fit Linear's schema`);
