// Real parts for the many-replicas suite (SPEC §12): a Redis Cluster of three masters with a
// replica each, a Redis master and replica watched by three password-protected Sentinels,
// Debian's haproxy balancing round robin without stickiness, and three `tollgate serve`
// processes that can be restarted one at a time. Every server listens on 127.0.0.1 only; every
// Redis command goes through `redis-cli` without blocking the event loop, so traffic keeps
// flowing while a failover runs.
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { freePort, requireProgram, start, tempDir, tollgateBinary, waitForHttp, waitForTollgate, write } from './lib.mjs';

const run = promisify(execFile);

export const redisServer = '/usr/bin/redis-server';
export const redisCli = '/usr/bin/redis-cli';
export const haproxy = '/usr/sbin/haproxy';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function portIsFree(port) {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A free port whose cluster bus port (port + 10000) is free too. */
async function freeClusterPort() {
  for (;;) {
    const port = await freePort();
    if (port + 10000 <= 65535 && await portIsFree(port + 10000)) return port;
  }
}

/** Polls `check` (an async predicate) until it holds, or throws naming `what`. */
export async function until(what, check, attempts = 300, pauseMs = 100) {
  let last;
  for (let attempt = 0; attempt < attempts; attempt += 1) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    await sleep(pauseMs);
  }
  throw new Error(`${what} never happened${last ? `: ${last.message}` : ''}`);
}

/** Runs one Redis command against 127.0.0.1:`port` and gives its raw output. */
export async function cli(port, args, password) {
  const auth = password ? ['--no-auth-warning', '-a', password] : [];
  const { stdout } = await run(redisCli, ['-h', '127.0.0.1', '-p', String(port), ...auth, ...args], { timeout: 10000 });
  return stdout;
}

function startRedis(name, port, dir, args) {
  return start(name, redisServer, [
    ...args, '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
    '--save', '', '--appendonly', 'no',
  ]);
}

/**
 * Six redis-server processes made into a Cluster by `redis-cli --cluster create
 * --cluster-replicas 1`: three masters, each with one replica.
 */
export async function startRedisCluster() {
  requireProgram(redisServer);
  requireProgram(redisCli);
  const nodes = [];
  for (let index = 0; index < 6; index += 1) {
    const port = await freeClusterPort();
    const dir = tempDir(`redis-cluster-${index}`);
    // nodes.conf keeps the node's identity, so a node started again rejoins as itself.
    const node = {
      port,
      launch() {
        node.server = startRedis(`redis-cluster-${port}`, port, dir, [
          '--cluster-enabled', 'yes', '--cluster-config-file', `${dir}/nodes.conf`,
          '--cluster-node-timeout', '2000',
        ]);
      },
    };
    node.launch();
    nodes.push(node);
  }
  for (const node of nodes) await until(`redis on ${node.port}`, async () => (await cli(node.port, ['PING'])).includes('PONG'));
  await run(redisCli, ['--cluster', 'create', ...nodes.map(({ port }) => `127.0.0.1:${port}`),
    '--cluster-replicas', '1', '--cluster-yes'], { timeout: 30000 });
  const cluster = {
    nodes,
    /** `session.redis_url` as a TOML list of seed nodes. */
    urlToml: `[${nodes.map(({ port }) => `"redis://127.0.0.1:${port}"`).join(', ')}]`,
    /** Each master's port with its replica's port, as the cluster sees them now. */
    async shards() {
      const text = await cli(nodes.find((node) => !node.server.exited).port, ['CLUSTER', 'NODES']);
      const lines = text.trim().split('\n').map((line) => line.split(' '));
      const port = (address) => Number(address.split('@')[0].split(':')[1]);
      const masters = lines.filter((fields) => fields[2].includes('master') && !fields[2].includes('fail'));
      return masters.map((master) => ({
        master: port(master[1]),
        replicas: lines.filter((fields) => fields[3] === master[0]).map((fields) => port(fields[1])),
      }));
    },
    /** Every node says the cluster is ok; three masters, each with one replica that is in sync. */
    async healthy() {
      for (const { port } of nodes) {
        if (!(await cli(port, ['CLUSTER', 'INFO'])).includes('cluster_state:ok')) return false;
      }
      const shards = await cluster.shards();
      if (shards.length !== 3 || !shards.every((shard) => shard.replicas.length === 1)) return false;
      // A replica still waiting for its first sync is listed, yet holds nothing of its master.
      for (const shard of shards) {
        const info = await cli(shard.replicas[0], ['INFO', 'replication']);
        if (!info.includes('master_link_status:up')) return false;
      }
      return true;
    },
    /**
     * `CLUSTER FAILOVER` on the replica of every master in turn (a coordinated failover: the
     * replica catches up, then takes over); resolves once each promoted node is the master of
     * a healthy cluster with its old master as its replica. Returns the ports that were masters.
     */
    async failEveryMasterOver() {
      const before = await cluster.shards();
      for (const shard of before) {
        const [replica] = shard.replicas;
        await cli(replica, ['CLUSTER', 'FAILOVER']);
        await until(`${replica} to take over from ${shard.master}`, async () => {
          const shards = await cluster.shards();
          return shards.some((now) => now.master === replica && now.replicas.includes(shard.master)) && await cluster.healthy();
        });
      }
      return before.map((shard) => shard.master);
    },
    /**
     * Kills each master in turn (SIGKILL: no hand-over), waits until the cluster has promoted
     * its replica, then starts the killed node again, which rejoins as the new master's
     * replica. Returns the ports that were killed.
     */
    async killEveryMaster() {
      const killed = [];
      for (const { master } of await cluster.shards()) {
        const node = nodes.find(({ port }) => port === master);
        const exited = new Promise((resolve) => node.server.child.once('exit', resolve));
        node.server.child.kill('SIGKILL');
        await exited;
        killed.push(master);
        await until(`the cluster to replace the killed master ${master}`, async () => {
          const shards = await cluster.shards();
          return shards.length === 3 && !shards.some((shard) => shard.master === master);
        });
        node.launch();
        await until(`${master} to rejoin as a replica`, async () => {
          const info = await cli(master, ['INFO', 'replication']);
          return info.includes('role:slave') && info.includes('master_link_status:up') && await cluster.healthy();
        });
      }
      return killed;
    },
    async stop() { for (const node of nodes) await node.server.stop(); },
  };
  await until('the cluster to agree', () => cluster.healthy(), 300);
  return cluster;
}

/**
 * A master and its replica, both with `requirepass` and `masterauth`, watched as `mymaster` by
 * three Sentinels that require the same password (quorum 2).
 */
export async function startRedisSentinel(password) {
  requireProgram(redisServer);
  requireProgram(redisCli);
  const auth = ['--requirepass', password, '--masterauth', password];
  const masterPort = await freePort();
  const replicaPort = await freePort();
  const dirs = [tempDir('redis-master'), tempDir('redis-replica')];
  const master = startRedis(`redis-master-${masterPort}`, masterPort, dirs[0], auth);
  await until('the master', async () => (await cli(masterPort, ['PING'], password)).includes('PONG'));
  const replica = startRedis(`redis-replica-${replicaPort}`, replicaPort, dirs[1],
    [...auth, '--replicaof', '127.0.0.1', String(masterPort)]);
  await until('the replica to sync', async () => (await cli(replicaPort, ['INFO', 'replication'], password)).includes('master_link_status:up'));
  const sentinels = [];
  for (let index = 0; index < 3; index += 1) {
    const port = await freePort();
    const dir = tempDir(`redis-sentinel-${index}`);
    // Sentinel rewrites its config file, so each has its own.
    const config = write(dir, 'sentinel.conf', [
      `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, `requirepass ${password}`,
      `sentinel monitor mymaster 127.0.0.1 ${masterPort} 2`,
      `sentinel auth-pass mymaster ${password}`,
      'sentinel down-after-milliseconds mymaster 2000',
      'sentinel failover-timeout mymaster 10000',
      '',
    ].join('\n'));
    sentinels.push({ port, server: start(`redis-sentinel-${port}`, redisServer, [config, '--sentinel']) });
  }
  const setup = {
    password,
    sentinels,
    ports: [masterPort, replicaPort],
    servers: [master, replica],
    dirs,
    /** `session.redis_url`: every sentinel, the password, the service name (SPEC §3). */
    url: `redis+sentinel://:${password}@${sentinels.map(({ port }) => `127.0.0.1:${port}`).join(',')}/mymaster`,
    async masterPort() {
      const sentinel = sentinels.find(({ server }) => !server.exited);
      const answer = await cli(sentinel.port, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'mymaster'], password);
      return Number(answer.trim().split('\n')[1]);
    },
    /**
     * Whether every sentinel knows the master, its replica and the other two sentinels, and the
     * replica has finished its sync (`state=online`): a replica still waiting for its first
     * sync counts as connected, yet a master killed then takes everything it holds with it.
     */
    async healthy() {
      const current = await setup.masterPort();
      for (const sentinel of sentinels.filter(({ server }) => !server.exited)) {
        const info = await cli(sentinel.port, ['INFO', 'sentinel'], password);
        if (!info.includes(`status=ok,address=127.0.0.1:${current},slaves=1,sentinels=3`)) return false;
      }
      const replication = await cli(current, ['INFO', 'replication'], password);
      return replication.includes('role:master') && replication.includes('connected_slaves:1')
        && /slave0:[^\r\n]*state=online/.test(replication);
    },
    /**
     * `SENTINEL FAILOVER mymaster`; resolves once the replica is the master, the old master
     * replicates it and every sentinel agrees. Returns the old master's port.
     */
    async failover() {
      const old = await setup.masterPort();
      await cli(sentinels[0].port, ['SENTINEL', 'FAILOVER', 'mymaster'], password);
      await until('the sentinels to promote the replica', async () => (await setup.masterPort()) !== old && await setup.healthy(), 300);
      return old;
    },
    /**
     * Kills the master (SIGKILL); resolves once the sentinels have promoted the replica and the
     * old master, started again, replicates it. Returns the killed port.
     */
    async killMaster() {
      const old = await setup.masterPort();
      const index = setup.ports.indexOf(old);
      const exited = new Promise((resolve) => setup.servers[index].child.once('exit', resolve));
      setup.servers[index].child.kill('SIGKILL');
      await exited;
      await until('the sentinels to promote the replica', async () => (await setup.masterPort()) !== old, 300);
      const now = await setup.masterPort();
      setup.servers[index] = startRedis(`redis-${old}`, old, setup.dirs[index], [...auth, '--replicaof', '127.0.0.1', String(now)]);
      await until('the old master to replicate the new one', () => setup.healthy(), 300);
      return old;
    },
    /** Stops the first sentinel of the URL for good (the other two keep the quorum). */
    async stopFirstSentinel() {
      await sentinels[0].server.stop();
    },
    async stop() {
      for (const sentinel of sentinels) await sentinel.server.stop();
      for (const server of setup.servers) await server.stop();
    },
  };
  await until('the sentinels to see the master, its replica and each other', () => setup.healthy(), 300);
  return setup;
}

/**
 * haproxy in front of `backends` ({ name, port, checkPort }): http mode, round robin, no
 * stickiness, health checks on each replica's admin `/healthz`. A request whose connection to
 * a replica fails (refused, or closed before any answer) is retried on another replica
 * (`retry-on`, `option redispatch`), so stopping one replica is invisible to clients; if no
 * replica can answer, haproxy itself answers 502 or 503 (see `fromHaproxy`).
 */
export async function startHaproxy({ port, backends }) {
  requireProgram(haproxy);
  const statsPort = await freePort();
  const dir = tempDir('haproxy');
  const config = write(dir, 'haproxy.cfg', `global
    maxconn 512
    nbthread 2

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend public
    bind 127.0.0.1:${port}
    default_backend tollgate

frontend stats
    bind 127.0.0.1:${statsPort}
    stats enable
    stats uri /stats

backend tollgate
    balance roundrobin
    option httpchk GET /healthz
${backends.map(({ name, port: serverPort, checkPort }) =>
  `    server ${name} 127.0.0.1:${serverPort} check port ${checkPort} inter 250 fall 1 rise 1`).join('\n')}
`);
  const check = await run(haproxy, ['-c', '-f', config]).catch((error) => error);
  if (check instanceof Error) throw new Error(`haproxy refused its config: ${check.stderr}`);
  const server = start('haproxy', haproxy, ['-db', '-f', config]);
  const origin = `http://127.0.0.1:${port}`;
  await waitForHttp(`http://127.0.0.1:${statsPort}/stats`, server);
  /** haproxy's CSV statistics: one object per server of the backend, by its name. */
  const servers = async () => {
    const csv = await (await fetch(`http://127.0.0.1:${statsPort}/stats;csv`)).text();
    const [header, ...rows] = csv.trim().split('\n').map((line) => line.split(','));
    const names = header.map((field) => field.replace('# ', ''));
    const stats = {};
    for (const row of rows) {
      const fields = Object.fromEntries(names.map((name, index) => [name, row[index]]));
      if (fields.pxname === 'tollgate' && !['FRONTEND', 'BACKEND'].includes(fields.svname)) stats[fields.svname] = fields;
    }
    return stats;
  };
  return {
    origin,
    server,
    /** Requests haproxy sent to each server so far (`stot`), by name. */
    async sent() {
      return Object.fromEntries(Object.entries(await servers()).map(([name, fields]) => [name, Number(fields.stot)]));
    },
    /** Whether every server passes its health check. */
    async allUp() {
      const stats = Object.values(await servers());
      return stats.length === backends.length && stats.every((fields) => fields.status === 'UP');
    },
    stop: () => server.stop(),
  };
}

/** Whether an answer is haproxy's own 502/503 (no replica could answer), not a replica's. */
export function fromHaproxy(status, body) {
  return (status === 503 && body.includes('No server is available to handle this request'))
    || (status === 502 && body.includes('The server returned an invalid or incomplete response'));
}

/**
 * Three `tollgate serve` processes, each with its own config file, listener and admin
 * listener; `configFor(replica)` writes the text from { port, adminPort, dir }. The first one
 * starts alone so that it creates the shared `signing_key_file` the others then read.
 */
export async function startReplicas(count, configFor) {
  const dir = tempDir('replicas');
  const replicas = [];
  for (let index = 0; index < count; index += 1) {
    const replica = { name: `r${index + 1}`, port: await freePort(), adminPort: await freePort(), dir };
    replica.config = write(dir, `${replica.name}.toml`, configFor(replica));
    replica.origin = `http://127.0.0.1:${replica.port}`;
    replica.admin = `http://127.0.0.1:${replica.adminPort}`;
    replicas.push(replica);
  }
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('TOLLGATE_')));
  const launch = async (replica) => {
    replica.process = start(`tollgate-${replica.name}`, tollgateBinary(), ['serve', '--config', replica.config], { env });
    await waitForTollgate(replica.admin, replica.origin, replica.process);
  };
  await launch(replicas[0]);
  await Promise.all(replicas.slice(1).map(launch));
  return {
    replicas,
    dir,
    /** Stops one replica (SIGTERM: it drains what is in flight) and starts it again. */
    async restart(replica) {
      await replica.process.stop();
      await launch(replica);
    },
    async stop() { for (const replica of replicas) await replica.process?.stop(); },
  };
}
