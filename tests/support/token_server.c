/* A tiny static binary for the JetBrains-style test: uploaded with SFTP, run with exec.
 * Usage: token-server PORT TOKEN. Greets each connection with "token==TOKEN==\n", then echoes. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 16)) return 1;
    printf("listening\n");
    fflush(stdout);
    for (;;) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0) continue;
        char buffer[4096];
        int length = snprintf(buffer, sizeof buffer, "token==%s==\n", argv[2]);
        write(conn, buffer, length);
        ssize_t got;
        while ((got = read(conn, buffer, sizeof buffer)) > 0) write(conn, buffer, got);
        close(conn);
    }
}
