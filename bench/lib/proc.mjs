// Process accounting from /proc: CPU time (utime + stime of every thread, in clock ticks of 10 ms) and
// resident memory, summed over a process and its descendants (nginx's workers, cluster workers).
import { readdirSync, readFileSync } from 'node:fs';

const TICK_MS = 10; // USER_HZ is 100 on Linux (getconf CLK_TCK); /proc/<pid>/stat counts in those ticks.

function statFields(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // After "pid (comm) ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** `pid` and every live descendant of it. */
export function processTree(pid) {
  const parent = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      parent.set(Number(entry), Number(statFields(entry)[1]));
    } catch {
      // gone meanwhile
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) for (const [child, ppid] of parent) if (ppid === tree[i]) tree.push(child);
  return tree;
}

/** CPU milliseconds (user + system) consumed so far by these processes (0 for one that is gone). */
export function cpuMs(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = statFields(pid);
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // gone
    }
  }
  return ticks * TICK_MS;
}

/** Resident set size in KiB (VmRSS) summed over these processes. */
export function rssKiB(pids) {
  let kib = 0;
  for (const pid of pids) {
    try {
      const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) kib += Number(m[1]);
    } catch {
      // gone
    }
  }
  return kib;
}
