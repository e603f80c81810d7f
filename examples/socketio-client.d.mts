import type { ManagerOptions, Socket, SocketOptions } from 'socket.io-client';

/** Connects through the gateway at `url`, the token in the `access_token` query parameter. */
export declare function connect(url: string, token: string, options?: Partial<ManagerOptions & SocketOptions>): Socket;
/** The app's answer to 'whoami'. */
export declare function whoami(socket: Socket): Promise<{ subject: string; scope: string | null; server: string; transport: string }>;
