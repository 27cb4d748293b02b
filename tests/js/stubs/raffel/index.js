// Stub for raffel (absent from the registry): an optional s3db.js dependency that
// s3db.js/lite does not use. Importing it is an error.
throw new Error('raffel is a stub in tests/js (see package.json); this s3db.js feature is unavailable');
