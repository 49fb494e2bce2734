#!/usr/bin/env node
let cli;
try {
  cli = await import('../dist/cli/main.js');
} catch (e) {
  process.stderr.write(
    `l2s-merge: cannot load the CLI bundle dist/cli/main.js (${e?.message ?? e}); run \`npm run build:cli\`\n`,
  );
  process.exit(1);
}
cli.installFatalHandlers();
process.exitCode = await cli.main(process.argv.slice(2));
