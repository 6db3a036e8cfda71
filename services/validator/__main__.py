from services.validator.service import main

# Guarded: a spawned child process (a data loader, say) imports this module.
if __name__ == "__main__":
    main()
