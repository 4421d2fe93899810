#!/usr/bin/env node
// Prints an HS256 JWT for the PostGraphile benchmark peer (node's crypto only, no dependency).
//
//   node mint-jwt.js ORG CLEARANCE [ROLE] [SECRET]
//
// ROLE defaults to argus_viewer; SECRET defaults to $ARGUS_PEER_JWT_SECRET.
// Claims: {"role": ROLE, "org": ORG, "clearance": CLEARANCE (number 0..4),
//          "aud": "postgraphile", "iat": now}. PostGraphile checks the signature and the
// audience, switches to ROLE and sets jwt.claims.org / jwt.claims.clearance for the request.
// No "exp": the token is for a benchmark run only.
'use strict';
const crypto = require('crypto');

const [org, clearanceText, role = 'argus_viewer', secretArg] = process.argv.slice(2);
const secret = secretArg ?? process.env.ARGUS_PEER_JWT_SECRET;
const clearance = Number(clearanceText);
if (!org || !Number.isInteger(clearance) || clearance < 0 || clearance > 4 || !secret) {
  process.stderr.write(
    'usage: node mint-jwt.js ORG CLEARANCE(0..4) [ROLE] [SECRET]  (SECRET defaults to $ARGUS_PEER_JWT_SECRET)\n',
  );
  process.exit(64);
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
const payload = b64url(
  JSON.stringify({ role, org, clearance, aud: 'postgraphile', iat: Math.floor(Date.now() / 1000) }),
);
const signature = crypto.createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
process.stdout.write(`${header}.${payload}.${signature}\n`);
