/*
 * pause: the process that holds a pod sandbox's namespaces open.
 *
 * It does nothing but wait: SIGINT and SIGTERM make it exit 0, SIGCHLD makes
 * it reap any exited children (it may be PID 1 of a shared PID namespace),
 * and otherwise it sleeps in pause() forever.
 *
 * Built statically by scripts/testbed/build-images.sh:
 *   gcc -static -O2 -o pause pause.c
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_terminate(int sig)
{
	(void)sig;
	_exit(0);
}

static void on_child(int sig)
{
	(void)sig;
	int saved_errno = errno;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved_errno;
}

static int install_handler(int sig, void (*handler)(int), int flags)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
		printf("pause (kubelet test bed) 3.10\n");
		return 0;
	}

	if (getpid() != 1)
		fprintf(stderr, "pause: warning: not running as PID 1\n");

	if (install_handler(SIGINT, on_terminate, 0) < 0 ||
	    install_handler(SIGTERM, on_terminate, 0) < 0 ||
	    install_handler(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) < 0) {
		perror("pause: sigaction");
		return 1;
	}

	for (;;)
		pause();

	/* not reached */
	return 42;
}
