import { isColorSupported, prettyFactory } from 'pino-pretty';
import { type DestinationStream } from 'pino';

/**
 * How log lines are written: `json`, one JSON object per line (what log collectors parse); `pretty`, one
 * human line per entry; `auto`, pretty on a terminal and JSON anywhere else (a pipe, a file, a container's
 * log), so that a daemon in production never writes lines a collector cannot parse.
 */
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** A destination that may say whether it is a terminal, as `process.stdout` does. */
export type LogDestination = DestinationStream & { readonly isTTY?: boolean };

/** The format lines are written in: `auto` is resolved by whether the destination is a terminal. */
export function resolveLogFormat(
  format: LogFormat,
  destination: { readonly isTTY?: boolean },
): 'json' | 'pretty' {
  if (format !== 'auto') return format;
  return destination.isTTY === true ? 'pretty' : 'json';
}

/**
 * The human form of a JSON log line: local time of day, level, message, the context on the same line, and
 * an error under `err` below it with its stack (and its causes). The line reaching it is the scrubbed one,
 * so redaction is the same in both formats.
 */
export function prettifier(colour: boolean): (line: string) => string {
  return prettyFactory({
    colorize: colour,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
    singleLine: true,
  });
}

/**
 * A destination that writes each JSON line as `prettifier` renders it. Colours only where asked, or on the
 * process's standard output when it supports them (NO_COLOR and FORCE_COLOR are honoured there).
 */
export function prettyDestination(destination: DestinationStream, colour: boolean): DestinationStream {
  const pretty = prettifier(colour);
  return {
    write: (line: string) => {
      destination.write(pretty(line));
    },
  };
}

/** Whether pretty lines written to the process's standard output may carry colours. */
export const STDOUT_SUPPORTS_COLOUR: boolean = isColorSupported;
