from services.submission.server import main

main()
