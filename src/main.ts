#!/usr/bin/env -S node --max-semi-space-size=64 --no-allocation-site-pretenuring
import { buildProgram } from './cli/program.js';

await buildProgram().parseAsync(process.argv);
