from services.prep.service import main

main()
