// `node --import ./test/register.mjs ...`: lets plain Node import transform.js.
import { register } from 'node:module';
register('./hooks.mjs', import.meta.url);
