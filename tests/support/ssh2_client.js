const { Client } = require('ssh2');
const fs = require('fs');
const [port, user, keyPath, tcpPort, sockPath] = process.argv.slice(2);
const conn = new Client();
const out = {};
function done(k, v) { out[k] = v; }
conn.on('ready', () => {
  conn.exec('echo out; echo err >&2; cat; exit 3', (err, stream) => {
    if (err) throw err;
    let so = '', se = '';
    stream.on('close', (code) => {
      done('exec', { code, so, se });
      conn.sftp((err, sftp) => {
        if (err) throw err;
        sftp.writeFile('/home/dev/node.txt', 'from node', (err) => {
          if (err) throw err;
          sftp.readFile('/home/dev/node.txt', (err, buf) => {
            if (err) throw err;
            done('sftp', buf.toString());
            conn.forwardOut('127.0.0.1', 0, '127.0.0.1', Number(tcpPort), (err, s) => {
              if (err) throw err;
              let d = '';
              s.on('data', (c) => d += c).on('close', () => {
                done('forwardOut', d);
                conn.openssh_forwardOutStreamLocal(sockPath, (err, s2) => {
                  if (err) throw err;
                  let d2 = '';
                  s2.on('data', (c) => d2 += c).on('close', () => {
                    done('streamlocal', d2);
                    console.log(JSON.stringify(out));
                    conn.end();
                  });
                  s2.end();
                });
              });
              s.end();
            });
          });
        });
      });
    }).on('data', (d) => so += d).stderr.on('data', (d) => se += d);
    stream.end('piped-in\n');
  });
}).connect({ host: '127.0.0.1', port: Number(port), username: user, privateKey: fs.readFileSync(keyPath), strictVendor: false });
