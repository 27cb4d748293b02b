// Stub for cli-args-parser (absent from the registry): only the s3db.js CLI uses it.
export function parse() { throw new Error('cli-args-parser stub: the s3db.js CLI is not available here'); }
export default { parse };
