/* MPI_IN_PLACE, for modelc's World (runtime/src/mpi/world.rs): mpi.h defines it as a
 * macro whose value differs between MPIs (Open MPI: (void *) 1; MPICH and its
 * derivatives: (void *) -1), and rsmpi does not bind it. Compiled by runtime/build.rs
 * with the MPI rsmpi builds against, so the value is that MPI's. */
#include <mpi.h>

void *modelc_mpi_in_place(void) { return MPI_IN_PLACE; }
