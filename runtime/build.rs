//! With the `mpi` feature: compiles `src/mpi/in_place.c`, which hands Rust the value of
//! `MPI_IN_PLACE` (a macro of `mpi.h` that differs between MPIs and that rsmpi does not
//! bind), with the compiler and headers rsmpi's own build finds (`build-probe-mpi`:
//! `mpicc`, or pkg-config's include paths). `World::allreduce_mean` reduces the large
//! gradients in place with it: no copy into a fused buffer and back. Without the
//! feature this does nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "mpi")]
    mpi::compile_in_place();
}

#[cfg(feature = "mpi")]
mod mpi {
    pub fn compile_in_place() {
        println!("cargo:rerun-if-changed=src/mpi/in_place.c");
        let lib = match build_probe_mpi::probe() {
            Ok(lib) => lib,
            Err(errors) => {
                for e in &errors {
                    println!("cargo:warning=finding MPI: {e}");
                }
                panic!("the `mpi` feature needs an MPI (apt-get install libopenmpi-dev openmpi-bin libclang-dev)");
            }
        };
        let mut build = cc::Build::new();
        build.file("src/mpi/in_place.c");
        match lib.mpicc {
            Some(mpicc) => {
                build.compiler(mpicc);
            }
            None => {
                for dir in &lib.include_paths {
                    build.include(dir);
                }
            }
        }
        build.compile("modelc_mpi_in_place");
    }
}
