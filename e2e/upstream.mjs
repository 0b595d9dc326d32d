// The protected application: answers every request with the request's headers as JSON.
import { createServer } from 'node:http';

export async function startUpstream(port) {
  const server = createServer((request, response) => {
    // Seed 000: this path needs a user, and says so with a 401 when none is named.
    if (request.url.startsWith('/lazy/private') && !request.headers['x-user']) {
      response.statusCode = 401;
      response.end('who are you?');
      return;
    }
    response.setHeader('content-type', 'application/json');
    response.end(JSON.stringify({ method: request.method, url: request.url, headers: request.headers }));
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { close: () => new Promise((resolve) => server.close(resolve)) };
}
