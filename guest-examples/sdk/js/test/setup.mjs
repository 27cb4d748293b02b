// Imported first by every test: lets plain Node load the SDK, whose host imports
// (replicator:plugin/...) exist only inside a component, by resolving them to host.mjs.
import { register } from 'node:module';
register('./hooks.mjs', import.meta.url);
