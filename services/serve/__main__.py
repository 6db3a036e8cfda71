from services.serve.service import main

main()
