// @replicator/s3db-forwarder: forwards every s3db.js write to the replication host.
//
//   import { ReplicatorForwarderPlugin } from '@replicator/s3db-forwarder';
//   await db.usePlugin(new ReplicatorForwarderPlugin({ url: 'http://127.0.0.1:7700', token }));

export { ReplicatorForwarderPlugin } from './src/plugin.js';
export { ForwardError } from './src/client.js';
