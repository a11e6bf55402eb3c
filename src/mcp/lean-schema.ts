/**
 * tools/list is read into the model's context on every session: each byte costs. The zod schemas
 * stay detailed (they validate every call and every result on the server); what is listed is a
 * leaner JSON Schema with the same meaning for a client:
 * - no `$schema` (MCP's default dialect is 2020-12);
 * - input: `additionalProperties: false` kept where it matters (the top level, which the server
 *   enforces everywhere anyway); descriptions kept at every level (they are the model's docs);
 * - output: the result's fields with their types only, without descriptions (the tool's
 *   description says what it returns) or required lists. Clients validate against a looser
 *   schema, never a wrong one.
 */
type Json = Record<string, unknown>;

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function walk(node: unknown, depth: number, visit: (n: Json, depth: number) => Json): unknown {
  if (Array.isArray(node)) return node.map((x) => walk(x, depth, visit));
  if (!isObj(node)) return node;
  const n = visit({ ...node }, depth);
  for (const key of ['properties', 'patternProperties', '$defs']) {
    if (isObj(n[key])) n[key] = Object.fromEntries(Object.entries(n[key] as Json).map(([k, v]) => [k, walk(v, depth + 1, visit)]));
  }
  for (const key of ['items', 'additionalProperties', 'not']) if (isObj(n[key])) n[key] = walk(n[key], depth + 1, visit);
  for (const key of ['anyOf', 'oneOf', 'allOf', 'prefixItems']) if (Array.isArray(n[key])) n[key] = (n[key] as unknown[]).map((x) => walk(x, depth, visit));
  return n;
}

export function leanInput(schema: Json): Json {
  return walk(schema, 0, (n, depth) => {
    delete n.$schema;
    // X or null, as one node: {"type": ["string", "null"]} (zod writes it so itself where it can).
    if (Array.isArray(n.anyOf) && n.anyOf.length === 2) {
      const [a, b] = n.anyOf as Json[];
      const nul = (x: Json | undefined) => x?.type === 'null' && Object.keys(x).length === 1;
      const other = nul(b) ? a : nul(a) ? b : undefined;
      if (other && typeof other.type === 'string' && !('anyOf' in other)) {
        delete n.anyOf;
        Object.assign(n, { ...other, type: [other.type, 'null'] });
      }
    }
    if (depth > 0 && n.additionalProperties === false) delete n.additionalProperties;
    if (n.maximum === Number.MAX_SAFE_INTEGER) delete n.maximum;
    // A switch is off unless set; a text limit this high is the server's to enforce.
    if (n.type === 'boolean' && n.default === false) delete n.default;
    if (typeof n.maxLength === 'number' && n.maxLength >= 10_000) delete n.maxLength;
    // "not empty" is the server's to check, and it says so in its error.
    if (n.minLength === 1) delete n.minLength;
    if (n.minimum === Number.MIN_SAFE_INTEGER) delete n.minimum;
    // Implied: JSON object keys are strings.
    if (isObj(n.propertyNames) && n.propertyNames.type === 'string' && Object.keys(n.propertyNames).length === 1) delete n.propertyNames;
    return n;
  }) as Json;
}

const SCALAR_KEYS = new Set(['type', 'enum', 'const', 'anyOf', 'items', 'properties', 'required', 'description']);

export function leanOutput(schema: Json): Json {
  return walk(schema, 0, (n, depth) => {
    delete n.$schema;
    if (n.additionalProperties === false) delete n.additionalProperties;
    if (isObj(n.propertyNames)) delete n.propertyNames;
    delete n.required;
    // The tool's description says what it returns; field names say the rest.
    if (depth >= 1) delete n.description;
    // The marker's const says nothing its type does not (it is only ever true).
    if (depth === 1 && n.type === 'boolean' && n.const === true) delete n.const;
    if (depth >= 1) {
      // Below the fields of each item: just the type.
      for (const k of Object.keys(n)) if (!SCALAR_KEYS.has(k) || k === 'properties' || k === 'required' || k === 'items') delete n[k];
      if (n.anyOf) {
        const members = n.anyOf as Json[];
        delete n.anyOf;
        // Only when every member names one type: a member that does not ({}, const, enum, several types) would be lost and the schema narrowed.
        if (members.every((x) => typeof x.type === 'string')) n.type = [...new Set(members.map((x) => x.type as string))];
      }
    }
    return n;
  }) as Json;
}
