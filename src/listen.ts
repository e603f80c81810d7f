import type { AddressInfo, Server } from 'node:net';

/** Listens on `host:port`; resolves the bound address, rejects with the listen error (EADDRINUSE...). */
export function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolveListen(server.address() as AddressInfo);
    });
  });
}
