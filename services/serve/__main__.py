from services.serve.service import main

# Guarded: a spawned child process (a decoder, a data loader) imports this module.
if __name__ == "__main__":
    main()
