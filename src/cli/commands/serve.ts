// `arcface serve`: serves the web page (dist-web/, built with the package) on a local port with node:http.
// Everything the page does runs in the browser; the server only hands out the page's own files, and the
// detector weights and wasm binaries its assets.json names from the installed packages (dependencies of
// this one), unless the build copied them into the folder (`--standalone`).
import type { CommandModule } from 'yargs';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArcfaceError } from '../../errors.ts';

const require = createRequire(import.meta.url);

/** dist-web beside src/ or dist/ (three levels above this module in both layouts). */
export const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'dist-web');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.bin': 'application/octet-stream',
  '.png': 'image/png',
};

export interface WebServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serves `dir` on `host`:`port` (0: a free port). GET/HEAD only, no directory listings, nothing outside `dir`. */
export function startWebServer(opts: { dir?: string; port?: number; host?: string } = {}): Promise<WebServer> {
  const dir = path.resolve(opts.dir ?? WEB_DIR);
  if (!fs.existsSync(path.join(dir, 'index.html'))) {
    throw new ArcfaceError('the web page is not built (no index.html): run `npm run build:web` in a checkout of arcface-ts', dir);
  }
  const manifest = path.join(dir, 'assets.json');
  const assets = fs.existsSync(manifest) ? (JSON.parse(fs.readFileSync(manifest, 'utf8')) as Record<string, string>) : {};
  const server = http.createServer((req, res) => {
    const send = (code: number, body: string) => {
      res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(body);
    };
    let pathname: string;
    try {
      pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
    } catch {
      return send(400, 'bad request\n');
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    let file = path.join(dir, pathname.endsWith('/') ? `${pathname}index.html` : pathname);
    const asset = assets[pathname.slice(1)];
    if (asset && !fs.existsSync(file)) {
      try {
        file = require.resolve(asset);
      } catch {
        return send(404, `not found: ${asset} is not installed\n`);
      }
    } else if (path.relative(dir, file).startsWith('..') || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      return send(404, 'not found\n');
    }
    const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
    // no-cache: a rebuilt page is picked up on reload.
    res.writeHead(200, { 'content-type': type, 'content-length': fs.statSync(file).size, 'cache-control': 'no-cache' });
    if (req.method === 'HEAD') return res.end();
    fs.createReadStream(file).pipe(res);
  });
  const host = opts.host ?? '127.0.0.1';
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new ArcfaceError(e.code === 'EADDRINUSE' ? `port ${opts.port} is in use; pick another with --port` : e.message, `${host}:${opts.port ?? 0}`)),
    );
    server.listen(opts.port ?? 0, host, () => {
      const port = (server.address() as { port: number }).port;
      const shown = host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host;
      resolve({
        url: `http://${shown}:${port}/`,
        port,
        close: () => new Promise<void>((done) => {
          server.closeAllConnections();
          server.close(() => done());
        }),
      });
    });
  });
}

interface Args {
  port: number;
  host?: string;
  dir?: string;
}

const command: CommandModule<object, Args> = {
  command: 'serve',
  describe: 'Serve the web page that detects, aligns, fine-tunes, calibrates and verifies faces in the browser (nothing is uploaded)',
  builder: (y) =>
    y
      .option('port', { type: 'number', default: 8080, describe: 'port to listen on (0: any free port)' })
      .option('host', { type: 'string', describe: 'address to listen on (default 127.0.0.1; `--host` alone: all interfaces)', coerce: (h: string | undefined) => (h === '' ? '0.0.0.0' : h) })
      .option('dir', { type: 'string', hidden: true, describe: 'serve another build of the page' })
      .example('$0 serve', 'open http://127.0.0.1:8080/ in a browser')
      .example('$0 serve --port 9000 --host', 'reachable from other machines on the network') as never,
  handler: async (argv) => {
    const s = await startWebServer({ dir: argv.dir, port: argv.port, host: argv.host });
    process.stdout.write(`arcface: serving the web page at ${s.url} (Ctrl-C stops)\n`);
    await new Promise<void>((resolve) => {
      const stop = () => void s.close().then(resolve);
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
  },
};

export default command;
